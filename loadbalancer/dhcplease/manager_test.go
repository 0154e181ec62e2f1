package dhcplease

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// fakeSpeakers answers exchanges from a script: per node, the outcome of
// each op. It records what was asked of whom.
type fakeSpeakers struct {
	mu      sync.Mutex
	nodes   []string
	answer  func(node string, ex *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error)
	asked   []string // "node op"
	clients map[string]bool
}

func (f *fakeSpeakers) DHCPNodes() []string { return f.nodes }

func (f *fakeSpeakers) DHCP(_ context.Context, node string, ex *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
	f.mu.Lock()
	f.asked = append(f.asked, node+" "+ex.GetOp().String())
	f.mu.Unlock()
	return f.answer(node, ex)
}

func granted(addr string) *speakerv1.DHCPResult {
	return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_GRANTED, Address: addr, LeaseSeconds: 60, RenewSeconds: 20,
		Server: "192.0.2.1", ServerMac: "02:00:00:00:00:01"}
}

func TestAcquire(t *testing.T) {
	id := ClientID("cluster", "lan", "service/uid-1")
	for _, tc := range []struct {
		name    string
		nodes   []string
		answer  func(node string, ex *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error)
		want    netip.Addr
		wantErr error
		asked   int
	}{
		{name: "granted", nodes: []string{"a", "b"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			return granted("192.0.2.100"), nil
		}, want: netip.MustParseAddr("192.0.2.100"), asked: 1},
		{name: "busy speaker, then another", nodes: []string{"a", "b"}, answer: func(node string, _ *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			if len(order([]string{"a", "b"}, id)) > 0 && node == order([]string{"a", "b"}, id)[0] {
				return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_BUSY}, nil
			}
			return granted("192.0.2.101"), nil
		}, want: netip.MustParseAddr("192.0.2.101"), asked: 2},
		{name: "no speaker", wantErr: ErrNoSpeaker},
		{name: "server silent", nodes: []string{"a"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_NO_ANSWER}, nil
		}, wantErr: ErrNoAnswer, asked: 1},
		{name: "NAK", nodes: []string{"a"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_REFUSED, Message: "no"}, nil
		}, wantErr: ErrRefused, asked: 1},
		{name: "a granted address that is no unicast IPv4 address", nodes: []string{"a"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			return granted("255.255.255.255"), nil
		}, wantErr: ErrInvalid, asked: 1},
		{name: "granted without a lease time", nodes: []string{"a"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			r := granted("192.0.2.100")
			r.LeaseSeconds = 0
			return r, nil
		}, wantErr: ErrInvalid, asked: 1},
		{name: "unanswered on every speaker tried", nodes: []string{"a", "b", "c", "d"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
			return nil, errors.New("stream ended")
		}, wantErr: ErrNoSpeaker, asked: triedNodes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSpeakers{nodes: tc.nodes, answer: tc.answer}
			m := New(f)
			l, err := m.Acquire(context.Background(), Want{ClientID: id, Pool: "lan", Name: "ns/svc"})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Acquire: got %v, want %v", err, tc.wantErr)
				}
				if _, ok := m.Get(id); ok {
					t.Error("a failed Acquire left a lease")
				}
			} else if err != nil || l.Addr != tc.want {
				t.Fatalf("Acquire: got %v, %v; want %v", l.Addr, err, tc.want)
			}
			if len(f.asked) != tc.asked {
				t.Errorf("asked %v, want %d exchanges", f.asked, tc.asked)
			}
		})
	}
}

func TestAcquireRequested(t *testing.T) {
	f := &fakeSpeakers{nodes: []string{"a"}, answer: func(_ string, ex *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
		if ex.GetAddress() != "192.0.2.150" {
			t.Errorf("the exchange asks for %q, want 192.0.2.150", ex.GetAddress())
		}
		return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_NOT_REQUESTED, Address: "192.0.2.100"}, nil
	}}
	m := New(f)
	_, err := m.Acquire(context.Background(), Want{ClientID: "x", Pool: "lan", Name: "ns/svc", Requested: netip.MustParseAddr("192.0.2.150")})
	var nr *NotRequestedError
	if !errors.As(err, &nr) || nr.Offered != netip.MustParseAddr("192.0.2.100") {
		t.Fatalf("Acquire: got %v, want a NotRequestedError offering 192.0.2.100", err)
	}
}

// TestRenew follows one lease through renewals: granted (timers move),
// unanswered (retried, kept), NAK (lost), and expiry unanswered (lost).
func TestRenew(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name     string
		outcome  func() (*speakerv1.DHCPResult, error)
		advance  time.Duration // time passed before the renewal
		wantLost error
		wantKept bool
	}{
		{name: "granted", outcome: func() (*speakerv1.DHCPResult, error) { return granted("192.0.2.100"), nil }, advance: 20 * time.Second, wantKept: true},
		{name: "unanswered before expiry", outcome: func() (*speakerv1.DHCPResult, error) {
			return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_NO_ANSWER}, nil
		}, advance: 30 * time.Second, wantKept: true},
		{name: "refused", outcome: func() (*speakerv1.DHCPResult, error) {
			return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_REFUSED, Message: "address not available"}, nil
		}, advance: 20 * time.Second, wantLost: ErrRefused},
		{name: "unanswered at expiry", outcome: func() (*speakerv1.DHCPResult, error) {
			return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_NO_ANSWER}, nil
		}, advance: 61 * time.Second, wantLost: ErrExpired},
		{name: "renewal granted another address", outcome: func() (*speakerv1.DHCPResult, error) { return granted("192.0.2.101"), nil },
			advance: 20 * time.Second, wantKept: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := now
			phase := "acquire"
			f := &fakeSpeakers{nodes: []string{"a"}, answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
				if phase == "acquire" {
					return granted("192.0.2.100"), nil
				}
				return tc.outcome()
			}}
			m := New(f)
			m.now = func() time.Time { return clock }
			var lost []error
			m.OnLost(func(l Lease, err error) { lost = append(lost, err) })
			l, err := m.Acquire(context.Background(), Want{ClientID: "x", Pool: "lan", Name: "ns/svc"})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(now.Add(20*time.Second), l.RenewAt); diff != "" {
				t.Errorf("RenewAt (-want +got):\n%s", diff)
			}
			phase = "renew"
			clock = now.Add(tc.advance)
			if id, due, _ := m.nextDue(); !due || id != "x" {
				t.Fatalf("the lease is not due at +%v", tc.advance)
			}
			m.renew(context.Background(), "x")
			got, kept := m.Get("x")
			if kept != tc.wantKept {
				t.Fatalf("kept = %v, want %v (lost: %v)", kept, tc.wantKept, lost)
			}
			if tc.wantLost != nil {
				if len(lost) != 1 || !errors.Is(lost[0], tc.wantLost) {
					t.Fatalf("lost %v, want one %v", lost, tc.wantLost)
				}
				return
			}
			if len(lost) != 0 {
				t.Fatalf("lost %v", lost)
			}
			if got.Addr != l.Addr {
				t.Errorf("the lease's address changed to %s", got.Addr)
			}
			if !got.RenewAt.After(clock) {
				t.Errorf("next renewal at %v, not after now %v", got.RenewAt, clock)
			}
		})
	}
}

func TestAdoptRenewsAtOnce(t *testing.T) {
	f := &fakeSpeakers{nodes: []string{"a"}, answer: func(_ string, ex *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
		if ex.GetOp() != speakerv1.DHCPExchange_RENEW || ex.GetAddress() != "192.0.2.120" {
			t.Errorf("got %v of %q, want a RENEW of 192.0.2.120", ex.GetOp(), ex.GetAddress())
		}
		return granted("192.0.2.120"), nil
	}}
	m := New(f)
	m.Adopt(Lease{ClientID: "x", Pool: "lan", Name: "ns/svc", Addr: netip.MustParseAddr("192.0.2.120")})
	if _, due, _ := m.nextDue(); !due {
		t.Fatal("an adopted lease is not due at once")
	}
	m.renewDue(context.Background())
	l, ok := m.Get("x")
	if !ok || l.Expires.IsZero() || l.Server != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("after renewal: %+v, %v", l, ok)
	}
}

func TestClientID(t *testing.T) {
	a := ClientID("c1", "lan", "service/u1")
	if a != ClientID("c1", "lan", "service/u1") {
		t.Fatal("not stable")
	}
	for _, other := range []string{ClientID("c2", "lan", "service/u1"), ClientID("c1", "lan2", "service/u1"), ClientID("c1", "lan", "service/u2")} {
		if other == a {
			t.Errorf("%s collides", other)
		}
	}
	if len(clientOption(a)) > 64 {
		t.Errorf("option 61 of %d bytes", len(clientOption(a)))
	}
}

// TestAdoptedRetry checks that an adopted lease (its expiry unknown) whose
// renewals go unanswered is tried again soon and more slowly over time,
// not after the one-minute cap: the server may end it any moment.
func TestAdoptedRetry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := now
	f := &fakeSpeakers{answer: func(string, *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
		return nil, errors.New("unreachable")
	}} // no speaker connected yet
	m := New(f)
	m.now = func() time.Time { return clock }
	m.Adopt(Lease{ClientID: "x", Pool: "lan", Name: "ns/svc", Addr: netip.MustParseAddr("192.0.2.120")})
	var waits []time.Duration
	for range 5 {
		m.renew(context.Background(), "x")
		l, ok := m.Get("x")
		if !ok {
			t.Fatal("an adopted lease was dropped while no speaker answered")
		}
		waits = append(waits, l.RenewAt.Sub(clock))
		clock = l.RenewAt
	}
	want := []time.Duration{time.Second, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	if diff := cmp.Diff(want, waits); diff != "" {
		t.Errorf("retry waits (-want +got):\n%s", diff)
	}
}
