// Package term gives a CCM leader its term, the fencing token it sends the
// speakers with every instruction, and tells it the moment it may no
// longer be the leader, so that it stops sending before anything else.
//
// The term is the time the leader acquired its leader-election Lease, in
// microseconds since the Unix epoch (Lease.spec.acquireTime): a later
// leader has a later acquisition time, because it can only take the Lease
// after the previous holder's expired (a lease duration, 8 s by IronLB's default,
// after its last renewal), as long as the replicas' clocks agree to within
// that. Unlike leaseTransitions it keeps growing when the Lease is deleted
// or renamed (a new namespace), so a new Lease never ranks below an old one.
// Without leader election the term is the process's start time: a restarted
// CCM outranks the one it replaces.
package term

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
)

// Lease names this CCM's leader-election Lease. An empty Name means leader
// election is off.
type Lease struct {
	Namespace, Name string
	// Duration is the Lease's duration (--leader-elect-lease-duration):
	// without a renewal seen for that long, this CCM stops considering
	// itself the leader.
	Duration time.Duration
	// RetryPeriod is how often the holder renews it
	// (--leader-elect-retry-period); the Lease is read that often.
	RetryPeriod time.Duration
}

// Term is this CCM's term as leader.
type Term struct {
	// Value is the fencing token (see the package comment).
	Value uint64
	// Holder is the Lease holder's identity, or the host name without
	// leader election.
	Holder string

	mu       sync.Mutex
	lastSeen time.Time // when a renewal by Holder was last observed
	duration time.Duration
	lost     error
	cancel   context.CancelCauseFunc
}

// ErrLost ends the context of a Term that is no longer this CCM's.
var ErrLost = errors.New("this CCM is no longer the leader")

// Acquire returns this process's term and a context that ends as soon as
// it may have stopped leading. Call it once this process won the
// election (from cloudprovider.Interface.Initialize). With leader election
// it reads the Lease, which this process holds at that moment, then reads
// it every RetryPeriod until ctx ends.
func Acquire(ctx context.Context, client kubernetes.Interface, lease Lease, host string) (*Term, context.Context, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	if lease.Name == "" {
		t := &Term{Value: uint64(time.Now().UnixMicro()), Holder: host, cancel: cancel}
		return t, ctx, nil
	}
	if lease.RetryPeriod <= 0 {
		lease.RetryPeriod = 2 * time.Second
	}
	if lease.Duration <= 0 {
		lease.Duration = 15 * time.Second
	}
	l, err := client.CoordinationV1().Leases(lease.Namespace).Get(ctx, lease.Name, metav1.GetOptions{})
	if err != nil {
		cancel(err)
		return nil, ctx, fmt.Errorf("reading the leader-election Lease %s/%s: %w", lease.Namespace, lease.Name, err)
	}
	if l.Spec.HolderIdentity == nil || l.Spec.AcquireTime == nil {
		cancel(ErrLost)
		return nil, ctx, fmt.Errorf("the leader-election Lease %s/%s has no holder or acquire time", lease.Namespace, lease.Name)
	}
	t := &Term{
		Value:    uint64(l.Spec.AcquireTime.UnixMicro()),
		Holder:   *l.Spec.HolderIdentity,
		lastSeen: time.Now(),
		duration: lease.Duration,
		cancel:   cancel,
	}
	log := klog.FromContext(ctx).WithName("term")
	if host != "" && !strings.HasPrefix(t.Holder, host) {
		log.Info("The Lease's holder does not carry this host's name; assuming it is this process, which just won the election", "holder", t.Holder, "host", host)
	}
	log.Info("Leading", "term", t.Value, "holder", t.Holder, "lease", lease.Namespace+"/"+lease.Name)
	renew := time.Time{}
	if l.Spec.RenewTime != nil {
		renew = l.Spec.RenewTime.Time
	}
	go t.watch(ctx, client, lease, renew, log)
	return t, ctx, nil
}

// watch reads the Lease every RetryPeriod and checks the local deadline
// ten times as often, until ctx ends or the term is lost.
func (t *Term) watch(ctx context.Context, client kubernetes.Interface, lease Lease, renew time.Time, log klog.Logger) {
	poll := time.NewTicker(lease.RetryPeriod)
	defer poll.Stop()
	check := time.NewTicker(lease.RetryPeriod / 10)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C:
		case <-poll.C:
			l, err := client.CoordinationV1().Leases(lease.Namespace).Get(ctx, lease.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				t.lose(log, fmt.Errorf("%w: the Lease was deleted", ErrLost))
			case err != nil:
				log.V(2).Info("Cannot read the Lease; still leading until its duration passes without a renewal seen", "err", err.Error())
			case l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != t.Holder:
				holder := "nobody"
				if l.Spec.HolderIdentity != nil {
					holder = *l.Spec.HolderIdentity
				}
				t.lose(log, fmt.Errorf("%w: the Lease is held by %s", ErrLost, holder))
			case l.Spec.RenewTime != nil && !l.Spec.RenewTime.Time.Equal(renew):
				renew = l.Spec.RenewTime.Time
				t.mu.Lock()
				t.lastSeen = time.Now()
				t.mu.Unlock()
			}
		}
		if err := t.Valid(); err != nil {
			t.lose(log, err)
		}
		if t.Lost() != nil {
			return
		}
	}
}

// Valid returns nil while this CCM may still be the leader: without leader
// election always; with it, while the Lease was held by this process and
// renewed within its duration, as far as this process has seen. It is
// cheap, and checked before every instruction sent.
func (t *Term) Valid() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lost != nil {
		return t.lost
	}
	if t.duration > 0 {
		if since := time.Since(t.lastSeen); since > t.duration {
			return fmt.Errorf("%w: no renewal of its Lease seen for %s (lease duration %s)", ErrLost, since.Round(time.Millisecond), t.duration)
		}
	}
	return nil
}

// Lost returns why the term was lost, nil while it holds.
func (t *Term) Lost() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lost
}

func (t *Term) lose(log klog.Logger, err error) {
	t.mu.Lock()
	if t.lost != nil {
		t.mu.Unlock()
		return
	}
	t.lost = err
	t.mu.Unlock()
	log.Info("Stopped leading: sending nothing more to the speakers", "term", t.Value, "reason", err.Error())
	t.cancel(err)
}

// End ends the term as StepDown does, without releasing the Lease:
// nothing more is sent, and what still has to be written while the Lease
// is held can be written before StepDown hands it over.
func (t *Term) End(ctx context.Context) {
	t.lose(klog.FromContext(ctx).WithName("term"), ErrSteppedDown)
}

// ErrSteppedDown is why a Term ends when its CCM shuts down (StepDown).
var ErrSteppedDown = fmt.Errorf("%w: it is shutting down", ErrLost)

// StepDown ends the term (nothing more is sent from now on, as Valid
// fails) and then hands the Lease back, as client-go's ReleaseOnCancel
// does: no holder, a one-second duration, so that a standby takes it at
// its next try instead of waiting a lease duration for it to expire. The
// cloud-provider framework does not release the Lease on a shutdown; a
// rolling update of the CCM would otherwise leave the speakers without a
// leader for that long. The Lease is only written while this process
// still holds it (a resourceVersion-checked update); any failure leaves
// it to expire as before.
func (t *Term) StepDown(ctx context.Context, client kubernetes.Interface, lease Lease) error {
	t.lose(klog.FromContext(ctx).WithName("term"), ErrSteppedDown)
	if lease.Name == "" {
		return nil
	}
	leases := client.CoordinationV1().Leases(lease.Namespace)
	released := false
	// The leader elector still renews the Lease until the process exits:
	// a renewal between reading and releasing it is a conflict, and the
	// Lease is read again (measured at 1,000 nodes: without the retry the
	// standby waited 8 s for the Lease to expire).
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(ctx, lease.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading the Lease %s/%s to release it: %w", lease.Namespace, lease.Name, err)
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != t.Holder {
			return nil // not ours any more
		}
		now := metav1.NewMicroTime(time.Now())
		one := int32(1)
		l.Spec.HolderIdentity = nil
		l.Spec.LeaseDurationSeconds = &one
		l.Spec.RenewTime, l.Spec.AcquireTime = &now, &now
		if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			return err
		}
		released = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("releasing the Lease %s/%s: %w", lease.Namespace, lease.Name, err)
	}
	if !released {
		return nil
	}
	klog.FromContext(ctx).WithName("term").Info("Released the leader-election Lease", "lease", lease.Namespace+"/"+lease.Name, "term", t.Value)
	return nil
}
