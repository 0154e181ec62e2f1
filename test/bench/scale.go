package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/scalerig"
)

// The scale group's point: simulated nodes and Services.
var (
	scaleNodes    = flag.Int("scale-nodes", 50, "scale group: simulated nodes (as many as -scale-node-prefixes hold)")
	scaleServices = flag.Int("scale-services", 500, "scale group: Services created at once (half layer 2, half BGP, one BGP Service in ten with externalTrafficPolicy Local)")
	scaleNodeNets = flag.String("scale-node-prefixes", "198.51.100.0/24,192.0.2.0/24", "scale group: comma-separated documentation prefixes the simulated nodes' addresses come from, in order (IPv6 ones, e.g. 2001:db8:100::/112, for more than 508 nodes)")
	scaleL2Only   = flag.Bool("scale-layer2-only", false, "scale group: every Service layer 2 (figures scale_<N>n_<M>s_l2only_...), for the layer-2 design alone")
	scaleProfile  = flag.String("scale-profile", "", "scale group: folder for the CCM's CPU profiles (pprof), taken over the idle and churn windows")
)

// scaleNodePrefixes parses -scale-node-prefixes.
func scaleNodePrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(*scaleNodeNets, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-scale-node-prefixes: %w", err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// benchScale measures one scale point (-scale-nodes, -scale-services) with
// ironlb-ccm as deploy/ ships it, a standby, and simulated speakers
// (test/scalerig): bulk creation until every VIP is announced where it
// should be and the API writes per Service; single Service changes (layer
// 2 and BGP) until the affected speakers have them and how many speakers
// were told anything; moves of externalTrafficPolicy Local endpoints; how
// many times the CCM took a live speaker for lost; CPU idle and during
// churn; the loss of the busiest node until its VIPs are announced
// elsewhere; the CCM's peak RSS; and a leader handover. One trial: a point
// takes minutes.
func benchScale(ctx context.Context, _ int) error {
	if err := netrig.Usable(); err != nil {
		return fmt.Errorf("network namespaces: %w", err)
	}
	// The simulated speakers' credentials log through klog: one line per
	// node and event.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	prefixes, err := scaleNodePrefixes()
	if err != nil {
		return err
	}
	r, err := scalerig.Start(ctx, scalerig.Options{
		Nodes: *scaleNodes, Services: *scaleServices, Layer2Only: *scaleL2Only, NodePrefixes: prefixes, Standby: true,
		CCMArgs: extraCCMArgs(), Dir: os.Getenv("IRONLB_BENCH_DIR"), ProfileDir: *scaleProfile, Report: report,
	})
	if err != nil {
		return err
	}
	defer r.Stop()
	fail := func(err error) error { return fmt.Errorf("%w\nCCM log tail:\n%s", err, r.Tail()) }
	if err := r.Bulk(ctx, *scaleServices); err != nil {
		return fail(err)
	}
	if _, err := r.Changes(ctx, 20); err != nil {
		return fail(err)
	}
	if !*scaleL2Only {
		if _, err := r.LocalMove(ctx, *scaleServices, 10); err != nil {
			return fail(err)
		}
	}
	// Streams opened again (each starts with a snapshot) before the kill:
	// the CCM took live speakers for lost, which moves their VIPs and
	// spoils the figures above.
	report(r.Name+"_speaker_reconnects", float64(r.Reconnects()), "streams")
	if err := r.Idle(ctx, 20*time.Second); err != nil {
		return fail(err)
	}
	if err := r.Churn(ctx, 10, 20*time.Second); err != nil {
		return fail(err)
	}
	if _, err := r.NodeLoss(ctx); err != nil {
		return fail(err)
	}
	if err := r.PeakRSS(ctx); err != nil {
		return err
	}
	if _, err := r.Handover(ctx); err != nil {
		return fail(err)
	}
	return nil
}
