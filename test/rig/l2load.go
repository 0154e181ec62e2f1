package rig

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// LoadPrefix is the pool of the load's Services: IPv6 addresses on the LAN
// (so the client reaches them without a route), outside PoolV6, and large
// enough (4,096) for 1,000 Services and the churn. A rig that runs StartLoad
// needs it in L2Options.ExtraPrefixes so that its nodes deliver it.
var LoadPrefix = netip.MustParsePrefix("2001:db8:100::1000/116")

// LoadLabel marks the load's Services (value "churn").
const LoadLabel = "ironlb.dev/load"

// LoadOptions sizes StartLoad. Zero values take the defaults.
type LoadOptions struct {
	// Services is how many LoadBalancer Services are kept in place
	// (default 1,000).
	Services int
	// Replacements is how many of them are replaced each second: one
	// deleted and a new one created, so 2 × Replacements API writes a
	// second, each a VIP withdrawn on one node and one placed (and, with
	// probes, probed) on another (default 10: 20 changes a second).
	Replacements float64
	// HogsPerCPU is how many busy-loop processes run per CPU (default 2);
	// -1 runs none.
	HogsPerCPU int
	// Namespace of the Services (default "default").
	Namespace string
}

// LoadStats is what the churn did.
type LoadStats struct {
	Created, Deleted, Errors int
	// LastError is the last failed API call, if any.
	LastError error
}

// Load is the background load of StartLoad; Stop ends it.
type Load struct {
	r      *L2
	opts   LoadOptions
	cancel context.CancelFunc
	wg     sync.WaitGroup
	hogs   []*exec.Cmd
	once   sync.Once

	mu    sync.Mutex
	live  []string // names of the churned Services in place
	next  int
	stats LoadStats
}

// StartLoad saturates the machine and keeps the CCM and the speakers busy,
// the conditions under which no VIP may move spuriously: an IPv6 pool
// (LoadPrefix), opts.Services LoadBalancer Services in it (it waits until
// each has its address), busy-loop child processes on every CPU (plain
// priority, killed by Stop), and a churn replacing opts.Replacements
// Services a second, so VIPs are placed and withdrawn on the speakers all
// the time.
func StartLoad(ctx context.Context, r *L2, opts LoadOptions) (*Load, error) {
	if opts.Services == 0 {
		opts.Services = 1000
	}
	if opts.Replacements == 0 {
		opts.Replacements = 10
	}
	if opts.HogsPerCPU == 0 {
		opts.HogsPerCPU = 2
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	pool := fmt.Sprintf(`apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata: {name: l2-load}
spec:
  addresses: ['%s']
  serviceAllocation:
    serviceSelector:
      matchLabels: {%s: churn}
`, LoadPrefix, LoadLabel)
	err := Eventually(30*time.Second, func() error {
		out, err := r.CP.KubectlStdin(ctx, pool, "apply", "-f", "-")
		if err != nil {
			return fmt.Errorf("applying the load's pool: %w\n%s", err, out)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &Load{r: r, opts: opts, cancel: cancel}
	names := make([]string, opts.Services)
	for i := range names {
		names[i] = l.newName()
	}
	if err := l.createAll(ctx, names); err != nil {
		cancel()
		return nil, err
	}
	if err := l.waitAssigned(ctx, 3*time.Minute); err != nil {
		cancel()
		return nil, err
	}
	if opts.HogsPerCPU > 0 {
		for range opts.HogsPerCPU * runtime.NumCPU() {
			c := exec.Command("sh", "-c", "while :; do :; done")
			c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := c.Start(); err != nil {
				l.Stop()
				return nil, fmt.Errorf("starting a CPU hog: %w", err)
			}
			l.hogs = append(l.hogs, c)
		}
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.churn(lctx)
	}()
	return l, nil
}

// newName names a new Service; it joins live once created.
func (l *Load) newName() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	name := fmt.Sprintf("load-%05d", l.next)
	l.next++
	return name
}

// loadService is one of the load's Services: single-stack IPv6, so it
// draws from LoadPrefix.
func loadService(namespace, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{LoadLabel: "churn"}},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeLoadBalancer,
			IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol},
			Selector:   map[string]string{"app": name},
			Ports:      []corev1.ServicePort{{Name: "http", Port: ServicePort, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

// createAll creates the Services, 20 calls in flight.
func (l *Load) createAll(ctx context.Context, names []string) error {
	sem := make(chan struct{}, 20)
	var (
		wg   sync.WaitGroup
		errs []error // under l.mu
	)
	for _, name := range names {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := l.r.CP.Client.CoreV1().Services(l.opts.Namespace).Create(ctx, loadService(l.opts.Namespace, name), metav1.CreateOptions{})
			l.mu.Lock()
			defer l.mu.Unlock()
			if err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("creating Service %s: %w", name, err))
				return
			}
			l.stats.Created++
			l.live = append(l.live, name)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitAssigned waits until every churned Service in place has an address.
func (l *Load) waitAssigned(ctx context.Context, timeout time.Duration) error {
	return Eventually(timeout, func() error {
		list, err := l.r.CP.Client.CoreV1().Services(l.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LoadLabel + "=churn"})
		if err != nil {
			return err
		}
		pending := 0
		for _, s := range list.Items {
			if len(s.Status.LoadBalancer.Ingress) == 0 {
				pending++
			}
		}
		if pending > 0 {
			return fmt.Errorf("%d of the load's %d Services have no address yet", pending, len(list.Items))
		}
		return nil
	})
}

// churn replaces a random Service opts.Replacements times a second, up to
// 8 replacements in flight, until ctx ends.
func (l *Load) churn(ctx context.Context) {
	t := time.NewTicker(time.Duration(float64(time.Second) / l.opts.Replacements))
	defer t.Stop()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	defer wg.Wait()
	// Seeded: every run churns the same way.
	rng := rand.New(rand.NewPCG(21, 21))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // the API is slower than the churn: skip a beat
		}
		l.mu.Lock()
		if len(l.live) == 0 {
			l.mu.Unlock()
			<-sem
			continue
		}
		i := rng.IntN(len(l.live))
		old := l.live[i]
		l.live = append(l.live[:i], l.live[i+1:]...)
		l.mu.Unlock()
		name := l.newName()
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			svcs := l.r.CP.Client.CoreV1().Services(l.opts.Namespace)
			derr := svcs.Delete(ctx, old, metav1.DeleteOptions{})
			_, cerr := svcs.Create(ctx, loadService(l.opts.Namespace, name), metav1.CreateOptions{})
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, err := range []error{derr, cerr} {
				if err != nil && ctx.Err() == nil {
					l.stats.Errors++
					l.stats.LastError = err
				}
			}
			if derr == nil {
				l.stats.Deleted++
			}
			if cerr == nil {
				l.stats.Created++
				l.live = append(l.live, name)
			}
		}()
	}
}

// Stats returns what the churn did so far.
func (l *Load) Stats() LoadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Stop ends the churn and kills the CPU hogs (the Services stay). It may
// be called more than once.
func (l *Load) Stop() LoadStats {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
		for _, c := range l.hogs {
			// The hog's own process group: sh and anything it forked.
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		}
	})
	return l.Stats()
}

// Move is one VIP move the CCM made, from its log line "Moving VIP".
type Move struct {
	VIP, From, To, Reason string
}

// MoveMark is a point in the CCM's record of VIP moves; see MarkMoves.
type MoveMark struct {
	total  float64
	offset int
}

// Moves is what the CCM moved since a MoveMark.
type Moves struct {
	// Total is the growth of ironlb_failovers_total (every reason): every
	// move the planner made, the authority.
	Total float64
	// Logged are the moves the CCM logged, which say from which node.
	Logged []Move
}

// Except returns how many moves were not among the logged ones from the
// given nodes: the spurious moves when those nodes were the ones failed on
// purpose. It counts from Total, so a move missing from the log counts as
// spurious rather than hiding one.
func (m Moves) Except(from ...string) int {
	injected := 0
	for _, mv := range m.Logged {
		for _, f := range from {
			if mv.From == f {
				injected++
				break
			}
		}
	}
	return max(0, int(m.Total)-injected)
}

// Others returns the logged moves not from the given nodes.
func (m Moves) Others(from ...string) []Move {
	var out []Move
	for _, mv := range m.Logged {
		injected := false
		for _, f := range from {
			injected = injected || mv.From == f
		}
		if !injected {
			out = append(out, mv)
		}
	}
	return out
}

// MarkMoves marks where the CCM's move count and log stand now. The
// spurious-move counter is the CCM's own ironlb_failovers_total, summed
// over its reasons: it counts every VIP the planner took from one node and
// gave to another (a new Service's first placement and a deleted
// Service's withdrawal are no moves), at the one place that decides. The
// speakers' logs would need matching withdrawals against deletions on
// three processes; the client's view sees only the VIPs it probes.
func (r *L2) MarkMoves(ctx context.Context) (MoveMark, error) {
	m, err := r.CCMMetrics(ctx)
	if err != nil {
		return MoveMark{}, fmt.Errorf("reading the CCM's moves: %w", err)
	}
	return MoveMark{total: SumMetric(m, "ironlb_failovers_total"), offset: len(r.CCM.Log())}, nil
}

// movingVIP matches the CCM's log line of a move.
var movingVIP = regexp.MustCompile(`"Moving VIP".* address="([^"]+)" from="([^"]+)" to="([^"]+)" reason="((?:[^"\\]|\\.)*)"`)

// MovesSince returns the moves the CCM made since mark.
func (r *L2) MovesSince(ctx context.Context, mark MoveMark) (Moves, error) {
	m, err := r.CCMMetrics(ctx)
	if err != nil {
		return Moves{}, fmt.Errorf("reading the CCM's moves: %w", err)
	}
	res := Moves{Total: SumMetric(m, "ironlb_failovers_total") - mark.total}
	log := r.CCM.Log()
	if mark.offset <= len(log) {
		log = log[mark.offset:]
	}
	for _, line := range strings.Split(log, "\n") {
		if x := movingVIP.FindStringSubmatch(line); x != nil {
			res.Logged = append(res.Logged, Move{VIP: x[1], From: x[2], To: x[3], Reason: x[4]})
		}
	}
	return res, nil
}

// SumMetric sums every series of the metric name in a Prometheus text
// exposition (0 when it has none).
func SumMetric(exposition, name string) float64 {
	sum := 0.0
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}
