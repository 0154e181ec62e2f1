package planner

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// Run waits for caches and for the allocator's restore, gives the speakers
// a moment to report what they announce (so VIPs stay where they are across
// a leader change), then plans until ctx ends.
func (p *Planner) Run(ctx context.Context) {
	p.term = ctx
	defer p.queue.ShutDown()
	defer p.records.ShutDown()
	p.factory.Start(ctx.Done())
	if !cache.WaitForNamedCacheSyncWithContext(ctx, p.synced...) {
		return
	}
	waitingSince := time.Now()
	for !p.opts.Ready() || p.opts.Peers != nil && !p.opts.Peers.Synced() {
		if time.Since(waitingSince) > 30*time.Second {
			p.log.Info("Still waiting for the restore and the BGP peers before planning; the speakers keep what they announce",
				"restored", p.opts.Ready(), "hint", "the CCM must be allowed to list and watch BGPPeers, and Secrets in its namespace")
			waitingSince = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.syncNodes()
	p.seedFromRecords()
	p.waitForReports(ctx)
	p.seedFromReports()
	p.startSettle()
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	p.startRecordWorkers()
	// Plan everything once before the speakers get their snapshots, so
	// that no VIP is withdrawn for lack of a plan.
	svcs, _ := p.services.List(labels.Everything())
	w := p.gather()
	for _, s := range svcs {
		name := s.Namespace + "/" + s.Name
		if err := p.syncServiceIn(name, w); err != nil {
			p.enqueue(serviceKey(name))
		}
	}
	p.planAll()
	p.speakers.SetReady()
	p.enqueue(allKey)
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
		p.records.ShutDown()
	}()
	for p.processNext() {
	}
}
