package cpvip

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
)

// netlinkStub stands in for the kernel's side of the VIP on lo: it records
// each change when it completes, and can hold the renewals (every add
// after the first) as a busy rtnl lock does.
type netlinkStub struct {
	mu  sync.Mutex
	ops []string
	// hold, when set, blocks renewals until closed; held is signalled
	// when a renewal starts waiting on it.
	hold chan struct{}
	held chan struct{}
	adds int
}

func (n *netlinkStub) add(netip.Addr, time.Duration) error {
	n.mu.Lock()
	n.adds++
	hold, renewal := n.hold, n.adds > 1
	n.mu.Unlock()
	if hold != nil && renewal {
		select {
		case n.held <- struct{}{}:
		default:
		}
		<-hold
	}
	n.record("add")
	return nil
}

func (n *netlinkStub) del(netip.Addr) error {
	n.record("del")
	return nil
}

func (n *netlinkStub) record(op string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ops = append(n.ops, op)
}

func (n *netlinkStub) recorded() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.ops...)
}

func TestLocalVIPRenewsOnlyWhileTaken(t *testing.T) {
	n := &netlinkStub{}
	a := newLocalVIP(netip.MustParseAddr("192.0.2.250"), logr.Discard())
	a.add, a.del = n.add, n.del

	a.renew() // not taken: nothing
	if err := a.take(); err != nil {
		t.Fatal(err)
	}
	a.renew()
	a.renew()
	if err := a.release(); err != nil {
		t.Fatal(err)
	}
	a.renew() // released: nothing
	if diff := cmp.Diff([]string{"add", "add", "add", "del"}, n.recorded()); diff != "" {
		t.Errorf("changes of the VIP on lo (-want +got):\n%s", diff)
	}
}

// TestLocalVIPReleaseAfterARenewalInFlight: a release that comes while a
// renewal waits for the kernel removes the VIP after that renewal, never
// before it (which would leave the VIP on lo, answered by the kernel, on a
// node that gave it up).
func TestLocalVIPReleaseAfterARenewalInFlight(t *testing.T) {
	n := &netlinkStub{hold: make(chan struct{}), held: make(chan struct{}, 1)}
	a := newLocalVIP(netip.MustParseAddr("192.0.2.250"), logr.Discard())
	a.add, a.del = n.add, n.del
	if err := a.take(); err != nil {
		t.Fatal(err)
	}
	renewed := make(chan struct{})
	go func() { a.renew(); close(renewed) }()
	<-n.held
	released := make(chan error, 1)
	go func() { released <- a.release() }()
	close(n.hold)
	<-renewed
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"add", "add", "del"}, n.recorded()); diff != "" {
		t.Errorf("changes of the VIP on lo (-want +got):\n%s", diff)
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

// announcerStub answers for addresses without a network.
type announcerStub struct {
	mu    sync.Mutex
	addrs map[netip.Addr]bool
}

func (a *announcerStub) Announce(addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.addrs[addr] = true
	return nil
}

func (a *announcerStub) Withdraw(addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.addrs, addr)
	return nil
}

func (a *announcerStub) Addresses() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Addr
	for addr := range a.addrs {
		out = append(out, addr)
	}
	return out
}

// TestLoopSendsWhileTheKernelHoldsTheVIP: the holder's messages go out
// every Interval while a renewal of the VIP on lo waits for the kernel
// (the rtnl lock busy with another netlink user): were they late by a dead
// interval, the others would take the VIP from a healthy holder. The loop
// runs for real (a real election, keys, messages and /readyz over TLS);
// only the network and netlink are stubs.
func TestLoopSendsWhileTheKernelHoldsTheVIP(t *testing.T) {
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

	n := &netlinkStub{hold: make(chan struct{}), held: make(chan struct{}, 1)}
	local := newLocalVIP(vip, logr.Discard())
	local.add, local.del = n.add, n.del
	go local.run(ctx)
	sent := &sentLog{keys: s.keys.Keys, more: make(chan struct{}, 1)}
	l := &loop{s: s, tr: sent, resp: &announcerStub{addrs: map[netip.Addr]bool{}}, local: local,
		verifier: NewVerifier(vip), el: NewElection(ElectionConfig{Node: s.cfg.Node, NodeIP: s.cfg.NodeIP}, time.Now())}
	done := make(chan error, 1)
	go func() { done <- l.run(ctx, make(chan received), make(chan error)) }()

	// Alone and ready, the speaker takes the VIP after a dead interval;
	// its first renewal then waits for the "kernel".
	timeout := time.After(30 * time.Second)
	select {
	case <-n.held:
	case <-timeout:
		t.Fatal("the VIP was never taken and renewed")
	}
	before := sent.holding()
	// Twice the messages of a dead interval while the renewal waits.
	want := before + 2*int(DeadInterval/Interval)
	for sent.holding() < want {
		select {
		case <-sent.more:
		case <-timeout:
			t.Fatalf("%d messages claiming the VIP while the kernel held its renewal, want at least %d", sent.holding()-before, want-before)
		}
	}
	close(n.hold)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ops := n.recorded(); len(ops) == 0 || ops[len(ops)-1] != "del" {
		t.Errorf("changes of the VIP on lo: %v, want the last to remove it", ops)
	}
}
