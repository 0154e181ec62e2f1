package planner

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/loadbalancer/placement"
)

// A new leader keeps every VIP where the previous one put it. It learns
// that from two sources: the Announced condition the previous leader wrote
// on each Service (its own record, possibly a moment stale), and the
// first report of every speaker (what each announces now). Where they
// disagree the speakers win, because they describe the data plane as
// clients see it; the annotation fills in for speakers that have not
// reported.

// seedFromRecords reads where the previous leader said each VIP was
// announced.
func (p *Planner) seedFromRecords() {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range svcs {
		for a, r := range Records(s) {
			if r.Node != "" {
				p.seeds[a] = r.Node
			}
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
