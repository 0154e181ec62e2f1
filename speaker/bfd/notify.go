package bfd

import "sync"

// notifier delivers Status changes in order from one goroutine, queueing
// without bound so that the protocol never waits for the callback.
type notifier struct {
	f    func(Status)
	mu   sync.Mutex
	q    []Status
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// start runs the delivery goroutine.
func (n *notifier) start() {
	n.wake = make(chan struct{}, 1)
	n.stop = make(chan struct{})
	n.done = make(chan struct{})
	go n.run()
}

// push queues st for delivery.
func (n *notifier) push(st Status) {
	if n.f == nil {
		return
	}
	n.mu.Lock()
	n.q = append(n.q, st)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run delivers until stopped, then delivers what is left.
func (n *notifier) run() {
	defer close(n.done)
	for {
		n.mu.Lock()
		q := n.q
		n.q = nil
		n.mu.Unlock()
		for _, st := range q {
			n.f(st)
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-n.wake:
		case <-n.stop:
			n.mu.Lock()
			q := n.q
			n.q = nil
			n.mu.Unlock()
			for _, st := range q {
				n.f(st)
			}
			return
		}
	}
}

// close stops the goroutine after the last delivery and waits for it.
func (n *notifier) close() {
	close(n.stop)
	<-n.done
}
