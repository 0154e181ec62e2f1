package cpvip

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
)

// kernelStub stands in for the kernel's side of serving the VIP (its
// address on lo, and the ARP/NDP responder): it records each change when
// it completes, and can hold the adds from the holdFrom-th on, as a busy
// rtnl lock does.
type kernelStub struct {
	mu    sync.Mutex
	ops   []string
	addrs map[netip.Addr]bool
	// hold, when set, blocks the adds from the holdFrom-th until closed;
	// held is signalled when an add starts waiting on it.
	hold     chan struct{}
	holdFrom int
	held     chan struct{}
	adds     int
}

func newKernelStub(holdFrom int) *kernelStub {
	return &kernelStub{addrs: map[netip.Addr]bool{}, hold: make(chan struct{}), holdFrom: holdFrom, held: make(chan struct{}, 1)}
}

func (k *kernelStub) add(netip.Addr, time.Duration) error {
	k.mu.Lock()
	k.adds++
	hold := k.holdFrom > 0 && k.adds >= k.holdFrom
	k.mu.Unlock()
	if hold {
		select {
		case k.held <- struct{}{}:
		default:
		}
		<-k.hold
	}
	k.record("add")
	return nil
}

func (k *kernelStub) del(netip.Addr) error {
	k.record("del")
	return nil
}

func (k *kernelStub) Announce(addr netip.Addr) error {
	k.mu.Lock()
	k.addrs[addr] = true
	k.mu.Unlock()
	k.record("announce")
	return nil
}

func (k *kernelStub) Withdraw(addr netip.Addr) error {
	k.mu.Lock()
	delete(k.addrs, addr)
	k.mu.Unlock()
	k.record("withdraw")
	return nil
}

func (k *kernelStub) Addresses() []netip.Addr {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Collect(maps.Keys(k.addrs))
}

func (k *kernelStub) record(op string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ops = append(k.ops, op)
}

func (k *kernelStub) recorded() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.ops...)
}

func testLocalVIP(k *kernelStub) *localVIP {
	a := newLocalVIP(netip.MustParseAddr("192.0.2.250"), k, logr.Discard())
	a.add, a.del = k.add, k.del
	return a
}

func TestLocalVIPServesWhileWanted(t *testing.T) {
	k := newKernelStub(0)
	a := testLocalVIP(k)

	a.reconcile() // not wanted: nothing
	a.set(true)
	a.reconcile() // on lo, then answered for
	a.reconcile() // renewed
	if !a.served.Load() {
		t.Error("not served after it was wanted")
	}
	a.set(false)
	a.reconcile() // withdrawn, then off lo
	a.reconcile() // nothing
	if a.served.Load() {
		t.Error("served after it was released")
	}
	if diff := cmp.Diff([]string{"add", "announce", "add", "withdraw", "del"}, k.recorded()); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

// TestLocalVIPReleaseAfterARenewalInFlight: a release (the loop's stop)
// that comes while a renewal waits for the kernel removes the VIP after
// that renewal, never before it (which would leave the VIP on lo, answered
// by the kernel, on a node that gave it up).
func TestLocalVIPReleaseAfterARenewalInFlight(t *testing.T) {
	k := newKernelStub(2)
	a := testLocalVIP(k)
	a.set(true)
	a.reconcile()
	renewed := make(chan struct{})
	go func() { a.reconcile(); close(renewed) }()
	<-k.held
	stopped := make(chan struct{})
	go func() { a.stop(); close(stopped) }()
	close(k.hold)
	<-renewed
	<-stopped
	if diff := cmp.Diff([]string{"add", "announce", "add", "withdraw", "del"}, k.recorded()); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

// sentLog records the loop's messages as they are sent.
type sentLog struct {
	keys func() []Key
	mu   sync.Mutex
	msgs []Message
	// more is signalled at every message.
	more chan struct{}
}

func (s *sentLog) Send(b []byte) error {
	m, err := Parse(b, s.keys())
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
	select {
	case s.more <- struct{}{}:
	default:
	}
	return nil
}

// holding counts the messages claiming the VIP.
func (s *sentLog) holding() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := 0
	for _, m := range s.msgs {
		if m.Holding {
			c++
		}
	}
	return c
}

// TestLoopSendsWhileTheKernelHoldsTheVIP: the holder's messages go out
// every Interval while the kernel holds the VIP's take-over or its
// renewal on lo (the rtnl lock busy with another netlink user): were they
// late by a dead interval, the others would take the VIP from a healthy
// holder. The loop runs for real (a real election, keys, messages and
// /readyz over TLS); only the network and the kernel are stubs.
func TestLoopSendsWhileTheKernelHoldsTheVIP(t *testing.T) {
	for _, tt := range []struct {
		name     string
		holdFrom int // the add the kernel holds: 1 takes the VIP over, 2 renews it
	}{
		{"take-over", 1},
		{"renewal", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, ca := newReadyzServer(t)
			srv.ok.Store(true)
			keyFile := writeTemp(t, strings.Repeat("k", MinKeyFileSize))
			vip := netip.MustParseAddr("192.0.2.250")
			s := NewSpeaker(Layer2Config{
				VIP: vip, Node: "node-1", NodeIP: netip.MustParseAddr("192.0.2.11"), KeyFiles: []string{keyFile},
				Readiness: ReadinessConfig{URL: srv.URL + "/readyz", CAFile: ca, ServerName: "example.com"},
			}, logr.Discard())
			if err := s.keys.Load(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go s.ready.Run(ctx)

			k := newKernelStub(tt.holdFrom)
			local := newLocalVIP(vip, k, logr.Discard())
			local.add, local.del = k.add, k.del
			go local.run(ctx)
			sent := &sentLog{keys: s.keys.Keys, more: make(chan struct{}, 1)}
			l := &loop{s: s, tr: sent, local: local, verifier: NewVerifier(vip),
				el: NewElection(ElectionConfig{Node: s.cfg.Node, NodeIP: s.cfg.NodeIP}, time.Now())}
			done := make(chan error, 1)
			go func() { done <- l.run(ctx, make(chan received), make(chan error)) }()

			// Alone and ready, the speaker takes the VIP after a dead
			// interval; the kernel then holds the add.
			timeout := time.After(30 * time.Second)
			select {
			case <-k.held:
			case <-timeout:
				t.Fatal("the kernel was never asked to add the VIP")
			}
			before := sent.holding()
			// Twice the messages of a dead interval while the add waits.
			want := before + 2*int(DeadInterval/Interval)
			for sent.holding() < want {
				select {
				case <-sent.more:
				case <-timeout:
					t.Fatalf("%d messages claiming the VIP while the kernel held its add, want at least %d", sent.holding()-before, want-before)
				}
			}
			// Serving is what the node does: not yet while the take-over
			// waits, still while a renewal does.
			if got, want := s.Status().Serving, tt.holdFrom > 1; got != want {
				t.Errorf("serving %v while the kernel held add %d, want %v", got, tt.holdFrom, want)
			}
			close(k.hold)
			for !s.Status().Serving {
				select {
				case <-sent.more: // the status is refreshed at every tick
				case <-timeout:
					t.Fatal("not serving after the kernel let the add through")
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			ops := k.recorded()
			if i := slices.Index(ops, "announce"); i < 1 || ops[i-1] != "add" {
				t.Errorf("changes %v: want the VIP answered for only once it is on lo", ops)
			}
			if len(ops) < 2 || !slices.Equal(ops[len(ops)-2:], []string{"withdraw", "del"}) {
				t.Errorf("changes %v: want the last to withdraw the VIP, then remove it from lo", ops)
			}
		})
	}
}
