package planner

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/loadbalancer/placement"
)

// A new leader keeps every VIP where the previous one put it. It learns
// that from two sources: the announced-by annotation the previous leader
// wrote on each Service (its own record, possibly a moment stale), and the
// first report of every speaker (what each announces now). Where they
// disagree the speakers win, because they describe the data plane as
// clients see it; the annotation fills in for speakers that have not
// reported.

// seedFromAnnotations reads where the previous leader said each VIP was
// announced.
func (p *Planner) seedFromAnnotations() {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range svcs {
		for a, node := range ParseAnnouncedBy(s.Annotations[AnnotationAnnouncedBy]) {
			p.seeds[a] = node
		}
	}
}

// waitForReports waits up to the grace period for every speaker's first
// report.
func (p *Planner) waitForReports(ctx context.Context) {
	deadline := time.Now().Add(p.opts.Grace)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for _, n := range p.speakers.Nodes() {
			if st, _ := p.speakers.State(n); !st.Reported {
				all = false
			}
		}
		if all {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seedFromReports takes in what the speakers announce now.
func (p *Planner) seedFromReports() {
	reporters := map[netip.Addr][]string{}
	reported := map[string]bool{}
	for _, n := range p.speakers.Nodes() {
		st, _ := p.speakers.State(n)
		if !st.Reported {
			continue
		}
		reported[n] = true
		for _, a := range st.Initial {
			reporters[a] = append(reporters[a], n)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, nodes := range reporters {
		prev, ok := p.seeds[a]
		if ok && (slices.Contains(nodes, prev) || !reported[prev]) {
			continue // the record agrees, or its node has not spoken yet
		}
		p.seeds[a] = placement.Choose(a, "", nodes)
	}
	p.log.Info("Speakers reported", "nodes", len(p.speakers.Nodes()), "reported", len(reported), "vipsSeeded", len(p.seeds))
}

// AnnotationAnnouncedBy on a Service tells which node announces each of
// its VIPs ("192.0.2.200=node-a,2001:db8::5=node-b"; "-" for none), so
// `kubectl describe svc` answers "where is my VIP?". A new leader also
// reads it to keep VIPs where they are.
const AnnotationAnnouncedBy = "ironlb.dev/announced-by"

// ParseAnnouncedBy parses the announced-by annotation; VIPs announced by
// no node and malformed entries are left out.
func ParseAnnouncedBy(s string) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, part := range strings.Split(s, ",") {
		addr, node, ok := strings.Cut(strings.TrimSpace(part), "=")
		a, err := netip.ParseAddr(addr)
		if !ok || err != nil || node == "" || node == "-" {
			continue
		}
		out[a] = node
	}
	return out
}
