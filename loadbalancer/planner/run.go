package planner

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// Run starts the planner up, phase by phase (each a method named as its
// phase), then plans until ctx ends. Start-up waits for the caches and for
// the allocator's restore, and gives the speakers a moment to report what
// they announce, so that VIPs stay where they are across a leader change.
func (p *Planner) Run(ctx context.Context) {
	p.term = ctx
	defer p.queue.ShutDown()
	defer p.records.ShutDown()
	for _, ph := range []phase{
		{"waitCaches", p.waitCaches},
		{"waitReady", p.waitReady},
		{"syncNodes", always(p.syncNodes)},
		{"seedFromRecords", always(p.seedFromRecords)},
		{"waitForReports", p.waitForReports},
		{"seedFromReports", always(p.seedFromReports)},
		{"startSettle", always(p.startSettle)},
		{"startWorkers", always(p.startWorkers)},
		{"planEverything", always(p.planEverything)},
		{"releaseSpeakers", always(p.releaseSpeakers)},
	} {
		start := time.Now()
		ok := ph.run(ctx)
		p.log.V(2).Info("Start-up phase", "phase", ph.name, "duration", time.Since(start), "completed", ok)
		if !ok {
			return
		}
	}
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
		p.records.ShutDown()
	}()
	for p.processNext() {
	}
}

// phase is one named step of Run's start-up. run returns false when
// start-up is to stop there (ctx ended while it waited).
type phase struct {
	name string
	run  func(ctx context.Context) bool
}

// always is a phase of f, which neither waits nor stops start-up.
func always(f func()) func(context.Context) bool {
	return func(context.Context) bool {
		f()
		return true
	}
}

// waitCaches starts the informers and waits until their caches are
// synced.
func (p *Planner) waitCaches(ctx context.Context) bool {
	p.factory.Start(ctx.Done())
	return cache.WaitForNamedCacheSyncWithContext(ctx, p.synced...)
}

// waitReady waits until the allocator restored the allocations and every
// node's BGP peers are known (Options.Ready, Peers.Synced); until then the
// speakers keep what they announce.
func (p *Planner) waitReady(ctx context.Context) bool {
	waitingSince := time.Now()
	for !p.opts.Ready() || p.opts.Peers != nil && !p.opts.Peers.Synced() {
		if time.Since(waitingSince) > 30*time.Second {
			p.log.Info("Still waiting for the restore and the BGP peers before planning; the speakers keep what they announce",
				"restored", p.opts.Ready(), "hint", "the CCM must be allowed to list and watch BGPPeers, and Secrets in its namespace")
			waitingSince = time.Now()
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// Phases in other files: syncNodes (nodes.go: a session to each node's
// speaker), seedFromRecords, waitForReports and seedFromReports (seed.go:
// where VIPs were announced under the previous leader), startSettle
// (settle.go: speakers that did not report keep their VIPs a while).

// startWorkers marks the planner started (planning takes effect from now
// on) and starts the workers that write the Announced records.
func (p *Planner) startWorkers() {
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	p.startRecordWorkers()
}

// planEverything plans every Service's VIPs once, before the speakers get
// their snapshots, so that no VIP is withdrawn for lack of a plan. A
// Service that fails is queued to be tried again.
func (p *Planner) planEverything() {
	svcs, _ := p.services.List(labels.Everything())
	w := p.gather()
	for _, s := range svcs {
		name := s.Namespace + "/" + s.Name
		if err := p.syncServiceIn(name, w); err != nil {
			p.enqueue(serviceKey(name))
		}
	}
	p.planAll()
}

// releaseSpeakers lets the speakers have their snapshots (the plan is
// complete) and queues a pass over every VIP for the worker.
func (p *Planner) releaseSpeakers() {
	p.speakers.SetReady()
	p.enqueue(allKey)
}
