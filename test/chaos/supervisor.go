package chaos

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
)

// RestartDelay is how long the supervisor waits before restarting a CCM
// that exited, as the kubelet restarts a Deployment's container. (The
// kubelet backs off from 10 s; with two replicas the standby leads
// meanwhile, so the delay hardly matters.)
const RestartDelay = time.Second

// leadingLog is what a CCM logs once it leads (package term).
const leadingLog = `"Leading"`

// supervisor keeps the CCM replicas running, like the kubelet does for
// the ironlb-ccm Deployment: a replica that exits (killed, or after losing
// its Lease) is started again.
type supervisor struct {
	r *rig.L2

	mu       sync.Mutex
	replicas []*replica
}

type replica struct {
	base     string
	port     int
	proc     *procs.Process
	restarts int
	stopped  bool // SIGSTOPped by a scenario
}

func newSupervisor(r *rig.L2, procs []*procs.Process) *supervisor {
	s := &supervisor{r: r}
	for i, p := range procs {
		s.replicas = append(s.replicas, &replica{base: p.Name, port: rig.CCMSecurePort + i, proc: p})
	}
	return s
}

// run restarts exited replicas until ctx ends.
func (s *supervisor) run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		for _, rep := range s.replicas {
			if !rep.proc.Exited() {
				continue
			}
			select {
			case <-rep.proc.Done():
			default:
				continue
			}
			rep.restarts++
			name := fmt.Sprintf("%s-%d", rep.base, rep.restarts)
			logf("%s exited (%v); restarting it as %s", rep.proc.Name, rep.proc.Err(), name)
			s.mu.Unlock()
			time.Sleep(RestartDelay)
			p, err := s.r.StartCCMReplica(name, rep.port)
			s.mu.Lock()
			if err != nil {
				logf("restarting %s: %v", name, err)
				continue
			}
			rep.proc = p
			rep.stopped = false
		}
		s.mu.Unlock()
	}
}

// leader returns the process leading now: a live, running process that
// logged that it leads (a process that loses its Lease exits), and its
// replica.
func (s *supervisor) leader() (*replica, *procs.Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rep := range s.replicas {
		if !rep.proc.Exited() && !rep.stopped && rep.proc.LogContains(leadingLog) {
			return rep, rep.proc
		}
	}
	return nil, nil
}

// waitLeader waits until some replica leads.
func (s *supervisor) waitLeader(ctx context.Context, timeout time.Duration) (*replica, *procs.Process, error) {
	deadline := time.Now().Add(timeout)
	for {
		if l, p := s.leader(); l != nil {
			return l, p, nil
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("no CCM replica leads after %s:\n%s", timeout, s.tails(15))
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// signal sends sig to p, a process of replica rep.
func (s *supervisor) signal(rep *replica, p *procs.Process, sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rep.proc == p {
		switch sig {
		case syscall.SIGSTOP:
			rep.stopped = true
		case syscall.SIGCONT:
			rep.stopped = false
		}
	}
	return p.Signal(sig)
}

func (s *supervisor) tails(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, rep := range s.replicas {
		fmt.Fprintf(&b, "--- %s (exited %v)\n%s\n", rep.proc.Name, rep.proc.Exited(), rep.proc.Tail(n))
	}
	return b.String()
}
