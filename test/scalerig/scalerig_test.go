package scalerig_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/scalerig"
)

// testWriter sends the rig's progress lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestScale is the short version of make scale: the shipped CCM and a
// standby with 30 simulated speakers and 200 Services (half layer 2, half
// BGP, one BGP Service in ten with externalTrafficPolicy Local). It checks
// where every VIP is announced, not how fast: each layer-2 VIP by exactly
// one speaker, each BGP VIP by every speaker and each Local one by exactly
// its endpoint nodes (after bulk creation, endpoint moves, a node's loss
// and a leader handover); that one layer-2 change reaches one speaker, a
// BGP one every speaker and a Local endpoint move only the old and new
// endpoint nodes; that no live speaker is taken for lost; that a dead
// node's VIPs move; and that a handover moves none.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane, two CCMs and 30 simulated speakers")
	}
	if err := netrig.Usable(); err != nil {
		t.Skipf("network namespaces: %v", err)
	}
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	const nodes, services = 30, 200
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := scalerig.Start(ctx, scalerig.Options{
		Nodes: nodes, Services: services, Standby: true, Dir: t.TempDir(), Log: testWriter{t},
		Report: func(name string, value float64, unit string) { t.Logf("%s %v %s", name, value, unit) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	fatal := func(err error) {
		t.Helper()
		t.Fatalf("%v\nCCM log tail:\n%s", err, r.Tail())
	}
	if err := r.Bulk(ctx, services); err != nil {
		fatal(err)
	}
	touched, err := r.Changes(ctx, 3)
	if err != nil {
		fatal(err)
	}
	if touched != (scalerig.Touched{L2: 1, BGP: nodes}) {
		t.Errorf("one Service change told %d speakers (layer 2) and %d (BGP), want 1 and %d", touched.L2, touched.BGP, nodes)
	}
	moved, err := r.LocalMove(ctx, services, 3)
	if err != nil {
		fatal(err)
	}
	if moved != 6 {
		t.Errorf("moving a Local Service's endpoints from 3 nodes to 3 others told %d speakers, want 6", moved)
	}
	if n := r.Reconnects(); n != 0 {
		t.Errorf("the CCM opened %d streams to live speakers again (took them for lost)", n)
	}
	dead, err := r.NodeLoss(ctx)
	if err != nil {
		fatal(err)
	}
	if n, err := r.Handover(ctx); err != nil {
		fatal(fmt.Errorf("handover after %s died: %w", dead, err))
	} else if n != 0 {
		t.Errorf("%d VIPs moved during the leader handover, want 0", n)
	}
}
