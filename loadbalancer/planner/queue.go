package planner

import (
	"context"
	"time"
)

// The planner's work queue holds keys, each naming what is to be
// re-planned: one Service's VIPs, what one node's speaker change can
// affect (marks.go), every Service's VIPs after a pool changed, or every
// VIP. One worker (processNext) takes them in turn, so planning never
// runs twice at once. The Services' Announced records have a queue of
// their own (records.go).

// keyKind says what a key re-plans.
type keyKind uint8

const (
	// kindService: one Service's VIPs; the key's name is the Service's
	// namespace/name.
	kindService keyKind = iota
	// kindNode: the VIPs a change of one node's speaker can affect; the
	// key's name is the node's.
	kindNode
	// kindPools: a pool changed; every Service's VIPs are refreshed.
	kindPools
	// kindAll: every VIP.
	kindAll
)

// key is an item of the planner's work queue.
type key struct {
	kind keyKind
	name string // a Service's namespace/name or a node's name; "" for the others
}

var (
	allKey   = key{kind: kindAll}
	poolsKey = key{kind: kindPools}
)

// serviceKey is the key that re-plans the Service namespace/name.
func serviceKey(namespacedName string) key { return key{kind: kindService, name: namespacedName} }

// nodeKey is the key that re-plans what a change of node's speaker can
// affect.
func nodeKey(node string) key { return key{kind: kindNode, name: node} }

// String is how logs show a key.
func (k key) String() string {
	switch k.kind {
	case kindService:
		return "service " + k.name
	case kindNode:
		return "node " + k.name
	case kindPools:
		return "pools"
	default:
		return "all"
	}
}

// enqueue queues k for the worker.
func (p *Planner) enqueue(k key) {
	p.qmu.Lock()
	p.pending[k] = true
	p.qmu.Unlock()
	p.queue.Add(k)
}

// processNext plans what one key names; false when the queue was shut
// down.
func (p *Planner) processNext() bool {
	k, quit := p.queue.Get()
	if quit {
		return false
	}
	p.qmu.Lock()
	delete(p.pending, k)
	p.busy++
	p.qmu.Unlock()
	defer func() {
		// Done first: a key added while it was processed is queued again
		// by Done (and is pending already).
		p.queue.Done(k)
		p.qmu.Lock()
		p.busy--
		p.qmu.Unlock()
	}()
	var err error
	switch {
	case p.term.Err() != nil:
		// The term ended: drop it.
	case k.kind == kindAll:
		p.syncNodes()
		p.planAll()
	case k.kind == kindPools:
		p.syncAllServices()
	case k.kind == kindNode:
		p.planNode(k.name)
	default:
		err = p.syncService(k.name)
	}
	if err != nil {
		p.log.Error(err, "Planning", "key", k)
		p.queue.AddRateLimited(k)
		return true
	}
	p.queue.Forget(k)
	return true
}

// Idle reports whether the planner has started and has nothing queued or
// in progress (work delayed for later, such as a failure backoff or the end
// of a settle window, does not count). Tests wait for it before asserting
// that something did not happen.
func (p *Planner) Idle() bool {
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	p.qmu.Lock()
	defer p.qmu.Unlock()
	return started && p.busy == 0 && len(p.pending) == 0 && len(p.pendingRecords) == 0
}

// WaitIdle waits until Idle, or ctx ends.
func (p *Planner) WaitIdle(ctx context.Context) error {
	for !p.Idle() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}
