package planner

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/loadbalancer/announced"
	"github.com/ironlb/ironlb/loadbalancer/placement"
)

// A new leader keeps every VIP where the previous one put it. It learns
// that from the record the previous leader wrote on each Service (its
// ironlb.dev/Announced status condition, see package
// loadbalancer/announced, Records): the CCMs' own record, which no speaker can
// forge. What speakers report they announce fills in only for VIPs without
// a record (placed a moment before the previous leader died): a speaker,
// even one authenticated as its node, cannot pull a VIP that is recorded
// elsewhere to itself by claiming it. Where a record is a moment stale the
// VIP moves back to the recorded node, which is eligible (or the planner
// moves it on), at the cost of one gratuitous ARP.

// seedFromRecords reads where the previous leader said each VIP was
// announced. A Service's record places only that Service's own VIPs: the
// addresses its status holds (announced.Records reads no others) and the restore
// gave it. Whatever a tenant manages to write into its own record, it
// cannot place another tenant's VIP.
func (p *Planner) seedFromRecords() {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return
	}
	ignored := 0
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range svcs {
		al, _ := p.alloc.Lookup(string(s.UID))
		for a, r := range announced.Records(s) {
			switch {
			case r.Node == "":
			case !slices.Contains(al.Addresses, a):
				ignored++
			default:
				p.seeds[a] = r.Node
			}
		}
	}
	if ignored > 0 {
		p.log.Info("Ignored records of VIPs their Services no longer hold", "vips", ignored)
	}
}

// waitForReports waits up to the grace period for every speaker's first
// report. It never stops start-up (a Run phase): when ctx ends it returns
// early, and the worker drops what is queued after that.
func (p *Planner) waitForReports(ctx context.Context) bool {
	deadline := time.Now().Add(p.opts.Grace)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for _, n := range p.speakers.Nodes() {
			if st, _ := p.speakers.State(n); !st.Reported {
				all = false
			}
		}
		if all {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
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
	disagree := 0
	for a, nodes := range reporters {
		if prev, ok := p.seeds[a]; ok {
			if !slices.Contains(nodes, prev) && reported[prev] {
				disagree++
			}
			continue // the CCMs' record wins over any claim
		}
		p.seeds[a] = placement.Choose(a, "", nodes)
	}
	if disagree > 0 {
		p.log.Info("Speakers claim VIPs recorded on other nodes; keeping the records", "vips", disagree)
	}
	p.log.Info("Speakers reported", "nodes", len(p.speakers.Nodes()), "reported", len(reported), "vipsSeeded", len(p.seeds))
}
