package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// run is one chaos run's state.
type run struct {
	cfg   Config
	cp    *controlplane.ControlPlane
	r     *rig.L2
	sup   *supervisor
	w     *watcher
	churn *churn
	smp   *sampler
	rng   *rand.Rand
	sents []netip.Addr
	f     Figures
}

// Run builds the rig, runs every scenario of cfg and returns what it
// measured. It removes everything it made.
func Run(ctx context.Context, cfg Config) (Figures, error) {
	if err := netrig.Usable(); err != nil {
		return Figures{}, fmt.Errorf("network namespaces: %w", err)
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: cfg.LogDir})
	if err != nil {
		return Figures{}, err
	}
	defer cp.Stop()
	lan, err := netrig.NewLANNoTest()
	if err != nil {
		return Figures{}, err
	}
	defer lan.Close()
	kubeconfig, err := rig.InstallDeploy(ctx, cp)
	if err != nil {
		return Figures{}, err
	}
	r, err := rig.StartL2(ctx, cp, lan, rig.L2Options{Kubeconfig: kubeconfig, Replicas: 2, ExtraPrefixes: cfg.ExtraPrefixes, CCMArgs: cfg.CCMArgs})
	if err != nil {
		return Figures{}, err
	}
	defer r.Stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	x := &run{cfg: cfg, cp: cp, r: r, rng: rand.New(rand.NewPCG(cfg.Seed, 42))}
	x.sup = newSupervisor(r, r.CCMs())
	go x.sup.run(ctx)
	err = x.all(ctx)
	if err != nil {
		err = fmt.Errorf("%w\nprocess logs:\n%s%s", err, x.sup.tails(20), r.Logs(10))
	}
	return x.f, err
}

func (x *run) all(ctx context.Context) error {
	if err := x.setup(ctx); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	for _, s := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"leader kills during churn", x.kills},
		{"CCM network blips", x.blips},
		{"API server outage", x.apiOutage},
		{"leader handover", x.handovers},
	} {
		logf("scenario: %s", s.name)
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	x.f.DoubleAllocations, x.f.IPChanges, x.f.UnassignedMax, x.f.UnassignedMaxOf = x.w.result()
	x.f.UnannouncedMax, x.f.UnannouncedMaxOf = x.w.unannouncedMax()
	logf("longest wait for an address while one was free: %s (%s); longest unannounced: %s (%s)",
		x.f.UnassignedMax, x.f.UnassignedMaxOf, x.f.UnannouncedMax, x.f.UnannouncedMaxOf)
	x.f.SampledVIPs, x.f.Unanswered = x.smp.result()
	_, x.f.ServicesCreated = x.churn.counts()
	return nil
}

// setup creates the pool, the watcher, the sentinels and the first
// Services.
func (x *run) setup(ctx context.Context) error {
	if _, err := x.cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	var addrs []string
	for _, p := range x.cfg.pool() {
		addrs = append(addrs, "'"+p.String()+"'")
	}
	// avoidBuggyIPs: the client's LAN is a /24, whose .255 is its broadcast
	// address.
	pool := fmt.Sprintf("apiVersion: ironlb.dev/v1alpha1\nkind: IPPool\nmetadata: {name: chaos}\nspec:\n  avoidBuggyIPs: true\n  addresses: [%s]\n", strings.Join(addrs, ", "))
	err := rig.Eventually(time.Minute, func() error {
		_, err := x.cp.KubectlStdin(ctx, pool, "apply", "-f", "-")
		return err
	})
	if err != nil {
		return err
	}
	x.w = newWatcher(poolSize(x.cfg.pool()))
	if err := x.w.run(ctx, x.cp.Client); err != nil {
		return err
	}
	for i := range x.cfg.Sentinels {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%d", i), Namespace: Namespace},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeLoadBalancer,
				Selector: map[string]string{"app": "sentinel"},
				Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		if _, err := x.cp.Client.CoreV1().Services(Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	x.churn = newChurn(x.cp.Client, x.cfg.Low, x.cfg.High, x.cfg.ChurnRate, x.cfg.Seed)
	if err := x.churn.seed(ctx, x.cfg.Low); err != nil {
		return err
	}
	if err := x.settled(ctx, 2*time.Minute); err != nil {
		return err
	}
	for i := range x.cfg.Sentinels {
		a, ok := x.w.assigned()[fmt.Sprintf("%s/s-%d", Namespace, i)]
		if !ok {
			return fmt.Errorf("sentinel s-%d has no address", i)
		}
		vip := netip.MustParseAddr(a[0])
		if _, err := x.r.WaitReachable(ctx, vip, 30*time.Second); err != nil {
			return fmt.Errorf("sentinel s-%d (%s): %w", i, vip, err)
		}
		x.sents = append(x.sents, vip)
	}
	x.smp = &sampler{r: x.r, w: x.w, rng: rand.New(rand.NewPCG(x.cfg.Seed, 7))}
	go x.smp.run(ctx)
	logf("setup done: %d Services, pool of %d addresses", len(x.w.assigned()), poolSize(x.cfg.pool()))
	return nil
}

// settled waits until a CCM leads and every Service that can get an
// address has one (all of them, or the pool is full).
func (x *run) settled(ctx context.Context, timeout time.Duration) error {
	if _, _, err := x.sup.waitLeader(ctx, timeout); err != nil {
		return err
	}
	return rig.Eventually(timeout, func() error {
		inUse := map[string]bool{}
		for _, as := range x.w.assigned() {
			for _, a := range as {
				inUse[a] = true
			}
		}
		if p := x.w.pending(); p > 0 && len(inUse) < poolSize(x.cfg.pool()) {
			return fmt.Errorf("%d Services wait for an address, %d of %d addresses in use", p, len(inUse), poolSize(x.cfg.pool()))
		}
		return nil
	})
}

// announcements returns which node each VIP is announced by, from the
// speakers themselves.
func (x *run) announcements(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range x.r.Nodes {
		vips, err := x.r.Announcing(ctx, n)
		if err != nil {
			return nil, err
		}
		for _, v := range vips {
			if prev, ok := out[v]; ok {
				return nil, fmt.Errorf("%s announced by %s and %s", v, prev, n.Name)
			}
			out[v] = n.Name
		}
	}
	return out, nil
}

// moved counts the VIPs of before that are announced elsewhere, or not at
// all, in after (VIPs whose Services went away do not count).
func (x *run) moved(before, after map[string]string) int {
	live := map[string]bool{}
	for _, as := range x.w.assigned() {
		for _, a := range as {
			live[a] = true
		}
	}
	n := 0
	for vip, node := range before {
		if live[vip] && after[vip] != node {
			n++
			logf("%s moved from %s to %q", vip, node, after[vip])
		}
	}
	return n
}

// kills SIGKILLs the leading CCM at random moments while the churn runs.
// Sentinel VIPs must keep answering, and none may move.
func (x *run) kills(ctx context.Context) error {
	before, err := x.announcements(ctx)
	if err != nil {
		return err
	}
	stop := watchConnections(x.r, x.sents)
	churnCtx, stopChurn := context.WithCancel(ctx)
	churnDone := make(chan struct{})
	go func() {
		x.churn.run(churnCtx)
		close(churnDone)
	}()
	for i := range x.cfg.Kills {
		rep, leader, err := x.sup.waitLeader(ctx, 2*time.Minute)
		if err != nil {
			stopChurn()
			return err
		}
		// A random moment of its leadership.
		time.Sleep(time.Duration(x.rng.Int64N(int64(6 * time.Second))))
		if err := x.sup.signal(rep, leader, syscall.SIGKILL); err != nil {
			stopChurn()
			return err
		}
		<-leader.Done()
		x.f.Kills++
		logf("kill %d/%d: %s", i+1, x.cfg.Kills, leader.Name)
	}
	stopChurn()
	<-churnDone
	if err := x.settled(ctx, 2*time.Minute); err != nil {
		return err
	}
	x.f.ConnectionsKills, x.f.FailedConnectionsKills = stop()
	after, err := x.announcements(ctx)
	if err != nil {
		return err
	}
	// Only the sentinels are untouched by the churn: compare those.
	sentBefore := map[string]string{}
	for _, v := range x.sents {
		sentBefore[v.String()] = before[v.String()]
	}
	x.f.VIPsMovedOnKills = x.moved(sentBefore, after)
	ops, created := x.churn.counts()
	logf("after %d kills: churn %v (%d created), %d Services with addresses", x.f.Kills, ops, created, len(x.w.assigned()))
	return nil
}

// leaderMetrics fetches the leading CCM's /metrics.
func (x *run) leaderMetrics(ctx context.Context) (string, error) {
	l, _, err := x.sup.waitLeader(ctx, time.Minute)
	if err != nil {
		return "", err
	}
	return x.r.CCMGetFrom(ctx, l.port, "/metrics")
}

// calm waits until the leader has every speaker connected and is not
// settling: the moment after which lost speakers' VIPs would have moved.
func (x *run) calm(ctx context.Context, timeout time.Duration) error {
	return rig.Eventually(timeout, func() error {
		m, err := x.leaderMetrics(ctx)
		if err != nil {
			return err
		}
		for _, n := range x.r.Nodes {
			if !strings.Contains(m, `ironlb_speaker_connected{node="`+n.Name+`"} 1`) {
				return fmt.Errorf("%s's speaker not connected", n.Name)
			}
		}
		if !strings.Contains(m, "ironlb_planner_settling 0") {
			return fmt.Errorf("the planner is settling")
		}
		return nil
	})
}

// blips cuts the CCM's network for BlipDuration, several times.
func (x *run) blips(ctx context.Context) error {
	if err := x.calm(ctx, time.Minute); err != nil {
		return err
	}
	for i := range x.cfg.Blips {
		before, err := x.announcements(ctx)
		if err != nil {
			return err
		}
		stop := watchConnections(x.r, x.sents)
		if err := x.r.Ctrl.SetLink(false); err != nil {
			return err
		}
		time.Sleep(x.cfg.BlipDuration)
		if err := x.r.Ctrl.SetLink(true); err != nil {
			return err
		}
		if err := x.calm(ctx, time.Minute); err != nil {
			return err
		}
		attempts, failed := stop()
		x.f.ConnectionsBlip += attempts
		x.f.FailedConnectionsBlip += failed
		after, err := x.announcements(ctx)
		if err != nil {
			return err
		}
		moved := x.moved(before, after)
		x.f.VIPsMovedOnBlip += moved
		logf("blip %d/%d: %d VIPs moved, %d of %d connections failed", i+1, x.cfg.Blips, moved, failed, attempts)
	}
	return nil
}

// apiOutage stops kube-apiserver for APIOutage. Services created just
// before (the backlog) must get addresses once it is back.
func (x *run) apiOutage(ctx context.Context) error {
	before, err := x.announcements(ctx)
	if err != nil {
		return err
	}
	vips := append([]netip.Addr(nil), x.sents...)
	for _, a := range x.w.steady(steadyFor) {
		if len(vips) >= len(x.sents)+20 {
			break
		}
		vips = append(vips, netip.MustParseAddr(a))
	}
	stop := watchConnections(x.r, vips)
	for range 5 {
		if err := x.churn.create(ctx); err != nil {
			return err
		}
	}
	api := x.cp.APIServer()
	x.w.pause(true)
	if err := api.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	logf("kube-apiserver stopped for %s", x.cfg.APIOutage)
	time.Sleep(x.cfg.APIOutage)
	if err := api.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	x.w.pause(false)
	back := time.Now()
	for range 5 {
		if err := rig.Eventually(time.Minute, func() error { return x.churn.create(ctx) }); err != nil {
			return err
		}
	}
	if err := x.settled(ctx, 3*time.Minute); err != nil {
		return err
	}
	x.f.APIRecovery = time.Since(back)
	if err := x.calm(ctx, time.Minute); err != nil {
		return err
	}
	x.f.ConnectionsAPI, x.f.FailedConnectionsAPI = stop()
	after, err := x.announcements(ctx)
	if err != nil {
		return err
	}
	x.f.VIPsMovedOnAPIOutage = x.moved(before, after)
	logf("API outage: recovered in %s, %d of %d connections failed, %d VIPs moved",
		x.f.APIRecovery.Round(time.Millisecond), x.f.FailedConnectionsAPI, x.f.ConnectionsAPI, x.f.VIPsMovedOnAPIOutage)
	return nil
}

// takeoverRE matches a speaker's log line for a snapshot it applied.
var takeoverRE = regexp.MustCompile(`"CCM took over the speaker".*term=(\d+)`)

// leadingTermRE matches a CCM's log line when it starts leading.
var leadingTermRE = regexp.MustCompile(`"Leading".*term=(\d+)`)

// handovers stops the leader (SIGSTOP) until the other replica took over
// and changed something, then resumes it: the speakers must apply nothing
// of the old term after the new one took over.
func (x *run) handovers(ctx context.Context) error {
	for i := range x.cfg.Handovers {
		if err := x.calm(ctx, time.Minute); err != nil {
			return err
		}
		oldRep, old, err := x.sup.waitLeader(ctx, time.Minute)
		if err != nil {
			return err
		}
		m := leadingTermRE.FindStringSubmatch(old.Log())
		if m == nil {
			return fmt.Errorf("%s logged no term", old.Name)
		}
		oldTerm := m[1]
		before, err := x.announcements(ctx)
		if err != nil {
			return err
		}
		stop := watchConnections(x.r, x.sents)
		logBefore := map[string]int{}
		for _, n := range x.r.Nodes {
			logBefore[n.Name] = len(n.Speaker.Log())
		}
		if err := x.sup.signal(oldRep, old, syscall.SIGSTOP); err != nil {
			return err
		}
		_, cur, err := x.sup.waitLeader(ctx, time.Minute)
		if err != nil {
			return err
		}
		// The new leader reaches every speaker and makes a change.
		err = rig.Eventually(time.Minute, func() error {
			for _, n := range x.r.Nodes {
				if !strings.Contains(n.Speaker.Log()[logBefore[n.Name]:], "Following a new CCM leader") {
					return fmt.Errorf("%s's speaker does not follow the new leader yet", n.Name)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		name := fmt.Sprintf("handover-%d", i)
		if _, err := x.cp.Client.CoreV1().Services(Namespace).Create(ctx, x.churn.service(name), metav1.CreateOptions{}); err != nil {
			return err
		}
		if err := x.settled(ctx, time.Minute); err != nil {
			return err
		}
		// The old leader wakes up, still holding its streams and its
		// plan; it must stop by itself (it lost its Lease) having changed
		// nothing.
		if err := x.sup.signal(oldRep, old, syscall.SIGCONT); err != nil {
			return err
		}
		select {
		case <-old.Done():
		case <-time.After(time.Minute):
			return fmt.Errorf("%s did not stop after losing its Lease", old.Name)
		}
		if !old.LogContains("Stopped leading: sending nothing more to the speakers") {
			logf("%s exited without saying it stopped sending:\n%s", old.Name, old.Tail(10))
		}
		if err := x.calm(ctx, time.Minute); err != nil {
			return err
		}
		for _, n := range x.r.Nodes {
			for _, t := range takeoverRE.FindAllStringSubmatch(n.Speaker.Log()[logBefore[n.Name]:], -1) {
				if t[1] == oldTerm {
					x.f.StaleLeaderInstructions++
					logf("%s's speaker applied a snapshot of the old term %s", n.Name, oldTerm)
				}
			}
			x.f.RefusedStaleInstructions += strings.Count(n.Speaker.Log()[logBefore[n.Name]:], "Refusing a snapshot of an older CCM leader")
		}
		attempts, failed := stop()
		x.f.FailedConnectionsHandover += failed
		after, err := x.announcements(ctx)
		if err != nil {
			return err
		}
		moved := x.moved(before, after)
		x.f.VIPsMovedOnHandover += moved
		logf("handover %d/%d: %s (term %s) stopped, %s took over; %d VIPs moved, %d of %d connections failed",
			i+1, x.cfg.Handovers, old.Name, oldTerm, cur.Name, moved, failed, attempts)
	}
	return nil
}
