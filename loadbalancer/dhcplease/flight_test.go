package dhcplease

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestFlights checks that Acquire does not hold its caller while the
// server is slow or silent, and that the next call takes the answer in.
func TestFlights(t *testing.T) {
	t.Run("a slow answer is taken in by the next call", func(t *testing.T) {
		gate := make(chan struct{})
		f := &fakeSpeakers{nodes: []string{"a"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			<-gate
			return granted("192.0.2.100"), nil
		}}
		m := New(f)
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the caller does not wait: its context ended
		w := Want{ClientID: "x", Pool: "lan", Name: "ns/svc"}
		if _, err := m.Acquire(ctx, w); !errors.Is(err, ErrPending) {
			t.Fatalf("first call: %v, want ErrPending", err)
		}
		close(gate)
		l, err := m.Acquire(context.Background(), w)
		if err != nil || l.Addr.String() != "192.0.2.100" {
			t.Fatalf("second call: %v, %v", l.Addr, err)
		}
		if len(f.asked) != 1 {
			t.Errorf("asked %v, want one exchange", f.asked)
		}
	})
	t.Run("a silent server holds no caller, and is asked again after each failure", func(t *testing.T) {
		var calls atomic.Int32
		f := &fakeSpeakers{nodes: []string{"a"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			calls.Add(1)
			return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_NO_ANSWER}, nil
		}}
		m := New(f)
		w := Want{ClientID: "x", Pool: "lan", Name: "ns/svc"}
		// The pool's first acquisition is waited for.
		if _, err := m.Acquire(context.Background(), w); !errors.Is(err, ErrNoAnswer) {
			t.Fatalf("first call: %v, want ErrNoAnswer", err)
		}
		// Now the pool's server is known silent: no waiting at all.
		w2 := Want{ClientID: "y", Pool: "lan", Name: "ns/other"}
		start := time.Now()
		if _, err := m.Acquire(context.Background(), w2); !errors.Is(err, ErrPending) {
			t.Fatalf("another Service: %v, want ErrPending", err)
		}
		if d := time.Since(start); d > leaseWait/2 {
			t.Errorf("the call took %v with the server known silent", d)
		}
		// Wait for y's flight to end (its result is the signal), then
		// the next call reports it and starts another.
		m.mu.Lock()
		fl := m.flights["y"]
		m.mu.Unlock()
		<-fl.done
		if _, err := m.Acquire(context.Background(), w2); !errors.Is(err, ErrNoAnswer) {
			t.Fatalf("after the flight: %v, want ErrNoAnswer", err)
		}
		m.mu.Lock()
		again := m.flights["y"]
		m.mu.Unlock()
		if again == nil || again == fl {
			t.Fatal("no new flight after a failure was reported")
		}
		<-again.done
		if n := calls.Load(); n != 3 {
			t.Errorf("%d exchanges, want 3", n)
		}
	})
	t.Run("flights are bounded", func(t *testing.T) {
		gate := make(chan struct{})
		defer close(gate)
		f := &fakeSpeakers{nodes: []string{"a"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			<-gate
			return nil, errors.New("gone")
		}}
		m := New(f)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for i := range maxFlights {
			if _, err := m.Acquire(ctx, Want{ClientID: string(rune('a' + i)), Pool: "lan"}); !errors.Is(err, ErrPending) {
				t.Fatalf("flight %d: %v", i, err)
			}
		}
		if _, err := m.Acquire(ctx, Want{ClientID: "one-more", Pool: "lan"}); !errors.Is(err, ErrTooManyPending) {
			t.Fatalf("beyond the bound: %v, want ErrTooManyPending", err)
		}
	})
}
