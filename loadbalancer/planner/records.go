package planner

import (
	"context"
	"time"
)

// recordWorkers write Services' Announced conditions in parallel with
// planning and with each other (never two writes of one Service at once:
// the queue hands a key to one worker at a time).
const recordWorkers = 4

// enqueueRecord queues the write of the Service's Announced condition.
// Planning does not wait for it: a move reaches the speakers first, and
// the record follows (a new leader that starts in between keeps the VIP
// where its speaker reports it).
func (p *Planner) enqueueRecord(key string) {
	p.qmu.Lock()
	p.pendingRecords[key] = true
	p.qmu.Unlock()
	p.records.Add(key)
}

// startRecordWorkers starts the workers of the records queue; they stop
// when it is shut down.
func (p *Planner) startRecordWorkers() {
	for range recordWorkers {
		go func() {
			for p.processNextRecord() {
			}
		}()
	}
}

// processNextRecord writes one Service's Announced condition.
func (p *Planner) processNextRecord() bool {
	key, quit := p.records.Get()
	if quit {
		return false
	}
	p.qmu.Lock()
	p.recordsBusy++ // with its leaving pending: FlushRecords sees one or the other
	delete(p.pendingRecords, key)
	p.busy++
	p.qmu.Unlock()
	defer func() {
		p.records.Done(key)
		p.qmu.Lock()
		p.busy--
		p.recordsBusy--
		p.qmu.Unlock()
	}()
	if err := p.recordAnnouncers(key); err != nil {
		p.log.Error(err, "Recording where the Service's VIPs are announced", "service", key)
		p.records.AddRateLimited(key)
		return true
	}
	p.records.Forget(key)
	return true
}

// FlushRecords waits until every queued Announced record is written (or
// failed once), or ctx ends. A leader that steps down calls it after its
// term ended and before it hands the Lease over: the next leader believes
// the records over the speakers' claims (seed.go), and a move made just
// before the handover must be on record by then.
func (p *Planner) FlushRecords(ctx context.Context) {
	for {
		p.qmu.Lock()
		flushed := len(p.pendingRecords) == 0 && p.recordsBusy == 0
		p.qmu.Unlock()
		if flushed {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}
