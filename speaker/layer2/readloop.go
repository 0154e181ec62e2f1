package layer2

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/packet"
)

// sleep waits for d or until the Responder is closed, which it reports.
func (r *Responder) sleep(d time.Duration) (closed bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-r.done:
		return true
	}
}

// isClosed reports whether Close has been called.
func (r *Responder) isClosed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// readLoop reads frames from pc until the Responder is closed and hands
// each to handle. Read errors are recorded as op (see Err) and retried with
// a growing pause; a successful read clears them.
func (r *Responder) readLoop(pc *packet.Conn, bufSize int, o op, what string, handle func(frame []byte)) {
	defer r.wg.Done()
	buf := make([]byte, bufSize)
	backoff := readBackoffMin
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			if r.isClosed() {
				return
			}
			err = fmt.Errorf("read %s: %w", what, err)
			r.health.set(o, err)
			r.log.Error(err, "Reading failed", "retryIn", backoff)
			if r.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, readBackoffMax)
			continue
		}
		if backoff != readBackoffMin {
			backoff = readBackoffMin
			r.health.set(o, nil)
		}
		handle(buf[:n])
	}
}

// op identifies a kind of socket operation for health reporting.
type op int

const (
	opOpenARP op = iota
	opReadARP
	opWriteARP
	opOpenNDP
	opReadNDP
	opWriteNDP
	numOps
)

// health records the last error of each kind of socket operation.
type health struct {
	mu   sync.Mutex
	errs [numOps]error
}

// set records the outcome of an operation: err, or success if nil.
func (h *health) set(o op, err error) {
	h.mu.Lock()
	h.errs[o] = err
	h.mu.Unlock()
}

func (h *health) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.Join(h.errs[:]...)
}
