package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeRouter records the calls a Reconciler makes.
type fakeRouter struct {
	calls    []string
	fail     string           // a call that fails, once
	sessions func() []Session // what Sessions reports; nil: none
}

func (f *fakeRouter) call(c string) error {
	if c == f.fail {
		f.fail = ""
		return fmt.Errorf("%s failed", c)
	}
	f.calls = append(f.calls, c)
	return nil
}

func (f *fakeRouter) Start(_ context.Context, asn uint32, id netip.Addr) error {
	return f.call(fmt.Sprintf("start %d %s", asn, id))
}
func (f *fakeRouter) Stop(_ context.Context, graceful bool) error {
	return f.call(fmt.Sprintf("stop graceful=%t", graceful))
}
func (f *fakeRouter) AddPeer(_ context.Context, p Peer) error {
	return f.call("add peer " + p.Address.String())
}
func (f *fakeRouter) UpdatePeer(_ context.Context, p Peer) error {
	return f.call("update peer " + p.Address.String())
}
func (f *fakeRouter) DeletePeer(_ context.Context, a netip.Addr) error {
	return f.call("delete peer " + a.String())
}
func (f *fakeRouter) ResetPeer(_ context.Context, a netip.Addr, why string) error {
	return f.call("reset peer " + a.String() + ": " + why)
}
func (f *fakeRouter) Export(_ context.Context, e Export, a Attributes) error {
	return f.call(fmt.Sprintf("export %s to %s %s", e.Prefix, e.Peer, a.key()))
}
func (f *fakeRouter) Unexport(_ context.Context, e Export) error {
	return f.call(fmt.Sprintf("unexport %s from %s", e.Prefix, e.Peer))
}
func (f *fakeRouter) Refresh(_ context.Context, p netip.Addr) error {
	return f.call("refresh " + p.String())
}
func (f *fakeRouter) AddPath(_ context.Context, p netip.Prefix, nh netip.Addr) error {
	return f.call(fmt.Sprintf("add path %s nh %v", p, nh))
}
func (f *fakeRouter) DeletePath(_ context.Context, p netip.Prefix) error {
	return f.call("delete path " + p.String())
}
func (f *fakeRouter) Sessions(context.Context) ([]Session, error) {
	if f.sessions == nil {
		return nil, nil
	}
	return f.sessions(), nil
}

func (f *fakeRouter) take() []string {
	c := f.calls
	f.calls = nil
	return c
}

var (
	peerA = netip.MustParseAddr("192.0.2.1")
	peerB = netip.MustParseAddr("192.0.2.2")
	vip1  = netip.MustParsePrefix("198.51.100.1/32")
	vip2  = netip.MustParsePrefix("198.51.100.2/32")
	vip6  = netip.MustParsePrefix("2001:db8:5::1/128")
	nh6   = netip.MustParseAddr("2001:db8::11")
	rid   = netip.MustParseAddr("192.0.2.11")
	lp200 = uint32(200)
)

func desired(exports map[Export]Attributes, peers ...netip.Addr) Desired {
	d := Desired{ASN: 64513, RouterID: rid, NextHopV6: nh6, Exports: exports}
	for _, p := range peers {
		d.Peers = append(d.Peers, Peer{Address: p, PeerASN: 64512, MyASN: 64513})
	}
	return d
}

// TestReconcilerSteps: each step changes only what changed, in an order
// peers never see a path without its attributes or an unwanted one.
func TestReconcilerSteps(t *testing.T) {
	ctx := context.Background()
	f := &fakeRouter{}
	rc := NewReconciler(f)
	steps := []struct {
		name string
		d    Desired
		want []string
	}{
		{"nothing to do stays stopped", desired(nil), nil},
		{"first peers and a VIP: peers last, so their first update is the whole table", desired(map[Export]Attributes{{peerA, vip1}: {}, {peerB, vip1}: {Communities: []string{"no-export"}}}, peerA, peerB), []string{
			"start 64513 192.0.2.11",
			"export 198.51.100.1/32 to 192.0.2.1 c;l", "export 198.51.100.1/32 to 192.0.2.2 c,no-export;l",
			"add path 198.51.100.1/32 nh 2001:db8::11",
			"add peer 192.0.2.1", "add peer 192.0.2.2",
		}},
		{"same again does nothing", desired(map[Export]Attributes{{peerA, vip1}: {}, {peerB, vip1}: {Communities: []string{"no-export"}}}, peerA, peerB), nil},
		{"a second VIP, IPv6", desired(map[Export]Attributes{{peerA, vip1}: {}, {peerB, vip1}: {Communities: []string{"no-export"}}, {peerA, vip6}: {}}, peerA, peerB), []string{
			"export 2001:db8:5::1/128 to 192.0.2.1 c;l", "add path 2001:db8:5::1/128 nh 2001:db8::11",
		}},
		{"changed attributes refresh that peer only", desired(map[Export]Attributes{{peerA, vip1}: {LocalPref: &lp200}, {peerB, vip1}: {Communities: []string{"no-export"}}, {peerA, vip6}: {}}, peerA, peerB), []string{
			"export 198.51.100.1/32 to 192.0.2.1 c;l;p200", "refresh 192.0.2.1",
		}},
		{"no longer to one peer", desired(map[Export]Attributes{{peerA, vip1}: {LocalPref: &lp200}, {peerA, vip6}: {}}, peerA, peerB), []string{
			"unexport 198.51.100.1/32 from 192.0.2.2", "refresh 192.0.2.2",
		}},
		{"a VIP gone: withdrawn, then unexported", desired(map[Export]Attributes{{peerA, vip6}: {}, {peerA, vip2}: {}}, peerA, peerB), []string{
			"delete path 198.51.100.1/32", "unexport 198.51.100.1/32 from 192.0.2.1",
			"export 198.51.100.2/32 to 192.0.2.1 c;l", "add path 198.51.100.2/32 nh 2001:db8::11",
		}},
		{"a peer gone is sent its withdrawals before its session closes", desired(map[Export]Attributes{{peerB, vip6}: {}, {peerB, vip2}: {}}, peerB), []string{
			"unexport 198.51.100.2/32 from 192.0.2.1", "unexport 2001:db8:5::1/128 from 192.0.2.1",
			"export 198.51.100.2/32 to 192.0.2.2 c;l", "export 2001:db8:5::1/128 to 192.0.2.2 c;l",
			"refresh 192.0.2.1", "refresh 192.0.2.2",
			"delete peer 192.0.2.1",
		}},
		{"a new router ID restarts", func() Desired {
			d := desired(map[Export]Attributes{{peerB, vip2}: {}}, peerB)
			d.RouterID = netip.MustParseAddr("192.0.2.99")
			return d
		}(), []string{
			"stop graceful=false", "start 64513 192.0.2.99",
			"export 198.51.100.2/32 to 192.0.2.2 c;l", "add path 198.51.100.2/32 nh 2001:db8::11", "add peer 192.0.2.2",
		}},
		{"no peers closes every session, the server stays", desired(nil), []string{
			"delete path 198.51.100.2/32", "unexport 198.51.100.2/32 from 192.0.2.2", "delete peer 192.0.2.2",
		}},
		{"exports to a peer not (yet) in the set-up are ignored (the router ID is back: a restart)", desired(map[Export]Attributes{{peerA, vip1}: {}, {peerB, vip2}: {}}, peerA), []string{
			"stop graceful=false", "start 64513 192.0.2.11", "export 198.51.100.1/32 to 192.0.2.1 c;l", "add path 198.51.100.1/32 nh 2001:db8::11", "add peer 192.0.2.1",
		}},
	}
	for _, s := range steps {
		if err := rc.Apply(ctx, s.d); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if diff := cmp.Diff(s.want, f.take()); diff != "" {
			t.Errorf("%s: calls (-want +got):\n%s", s.name, diff)
		}
	}
}

// TestReconcilerResumesAfterError: a failed call is made again by the
// next Apply, and what worked is not repeated.
func TestReconcilerResumesAfterError(t *testing.T) {
	ctx := context.Background()
	f := &fakeRouter{fail: "add path 198.51.100.2/32 nh 2001:db8::11"}
	rc := NewReconciler(f)
	d := desired(map[Export]Attributes{{peerA, vip1}: {}, {peerA, vip2}: {}}, peerA)
	if err := rc.Apply(ctx, d); err == nil {
		t.Fatal("Apply succeeded despite a failed AddPath")
	}
	f.take()
	if err := rc.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"add path 198.51.100.2/32 nh 2001:db8::11"}, f.take()); diff != "" {
		t.Errorf("retry (-want +got):\n%s", diff)
	}
}

func TestReconcilerRefusesBadInput(t *testing.T) {
	tests := []struct {
		name string
		d    Desired
	}{
		{"IPv6 router ID", Desired{ASN: 1, RouterID: nh6, Peers: []Peer{{Address: peerA}}}},
		{"no router ID", Desired{ASN: 1, Peers: []Peer{{Address: peerA}}}},
		{"AS 0", Desired{RouterID: rid, Peers: []Peer{{Address: peerA}}}},
		{"peer twice", Desired{ASN: 1, RouterID: rid, Peers: []Peer{{Address: peerA}, {Address: peerA}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeRouter{}
			if err := NewReconciler(f).Apply(context.Background(), tc.d); err == nil {
				t.Error("accepted")
			}
			if len(f.calls) != 0 {
				t.Errorf("calls made for bad input: %v", f.calls)
			}
		})
	}
}

// TestReconcilerIsolatesFailures: one export that fails does not keep the
// others (nor their paths) from being applied.
func TestReconcilerIsolatesFailures(t *testing.T) {
	ctx := context.Background()
	f := &fakeRouter{fail: "export 198.51.100.1/32 to 192.0.2.1 c;l"}
	rc := NewReconciler(f)
	d := desired(map[Export]Attributes{{peerA, vip1}: {}, {peerA, vip2}: {}}, peerA)
	if err := rc.Apply(ctx, d); err == nil {
		t.Fatal("Apply succeeded despite a failed export")
	}
	if got := f.take(); !slices.Contains(got, "add path 198.51.100.2/32 nh 2001:db8::11") {
		t.Errorf("the other VIP was not advertised: %v", got)
	}
	if err := rc.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"export 198.51.100.1/32 to 192.0.2.1 c;l", "add path 198.51.100.1/32 nh 2001:db8::11"}, f.take()); diff != "" {
		t.Errorf("retry (-want +got):\n%s", diff)
	}
}

// TestReconcilerRetriesRefresh: a refresh that failed is made again by the
// next Apply, though nothing else changed.
func TestReconcilerRetriesRefresh(t *testing.T) {
	ctx := context.Background()
	f := &fakeRouter{}
	rc := NewReconciler(f)
	if err := rc.Apply(ctx, desired(map[Export]Attributes{{peerA, vip1}: {}}, peerA)); err != nil {
		t.Fatal(err)
	}
	f.take()
	f.fail = "refresh 192.0.2.1"
	d := desired(map[Export]Attributes{{peerA, vip1}: {LocalPref: &lp200}}, peerA)
	if err := rc.Apply(ctx, d); err == nil {
		t.Fatal("Apply succeeded despite a failed refresh")
	}
	f.take()
	if err := rc.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh 192.0.2.1"}, f.take()); diff != "" {
		t.Errorf("retry (-want +got):\n%s", diff)
	}
}
