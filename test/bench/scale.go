package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/simspeakers"
)

// The scale group's point: simulated nodes and layer-2 Services.
var (
	scaleNodes    = flag.Int("scale-nodes", 50, "scale group: simulated nodes (as many as -scale-node-prefixes hold)")
	scaleServices = flag.Int("scale-services", 500, "scale group: layer-2 Services created at once")
	scaleNodeNets = flag.String("scale-node-prefixes", "198.51.100.0/24,192.0.2.0/24", "scale group: comma-separated documentation prefixes the simulated nodes' addresses come from, in order (IPv6 ones, e.g. 2001:db8:100::/112, for more than 508 nodes)")
)

// The scale group's addresses. The simulated nodes take
// -scale-node-prefixes (local routes in the namespace the CCM and the
// speakers' listeners share); the namespace itself has 203.0.113.1; the
// Services' pool is IPv6 (enough addresses for 10,000 Services), disjoint
// from all of them.
var (
	scaleHostPrefix = netip.MustParsePrefix("203.0.113.1/24")
	scalePool       = netip.MustParsePrefix("2001:db8:1000::/112")
)

// scaleNodePrefixes parses -scale-node-prefixes; each must be disjoint
// from the namespace's own prefix and the pool.
func scaleNodePrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(*scaleNodeNets, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-scale-node-prefixes: %w", err)
		}
		if p.Overlaps(scaleHostPrefix) || p.Overlaps(scalePool) {
			return nil, fmt.Errorf("-scale-node-prefixes: %s overlaps %s or the pool %s", p, scaleHostPrefix, scalePool)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// scaleRig is one scale point's running system: a control plane, the
// shipped CCM in a network namespace and a fleet of simulated speakers.
type scaleRig struct {
	cp   *controlplane.ControlPlane
	lan  *netrig.LAN
	ccm  *procs.Process
	host *netrig.Host // the namespace of the CCM and the speakers
	// ccmPort is the CCM's secure port (on 127.0.0.1 in host's
	// namespace).
	ccmPort int
	fleet   *simspeakers.Fleet
	name    string // the figures' prefix, scale_<N>n_<M>s
}

// benchScale measures one scale point (-scale-nodes, -scale-services) with
// ironlb-ccm as deploy/ ships it and simulated speakers (test/simspeakers):
// bulk creation until every VIP is announced by one speaker and the API
// writes per Service, single Service changes until the affected speaker has
// them and how many speakers were told anything, the loss of the busiest
// node until its VIPs are announced elsewhere, and the CCM's peak RSS; and
// how many times the CCM took a live speaker for lost. One
// trial: a point takes minutes.
func benchScale(ctx context.Context, _ int) error {
	if err := netrig.Usable(); err != nil {
		return fmt.Errorf("network namespaces: %w", err)
	}
	// The simulated speakers' credentials log through klog: one line per
	// node and event.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	r, err := startScale(ctx, *scaleNodes)
	if err != nil {
		return err
	}
	defer r.stop()
	fail := func(err error) error { return fmt.Errorf("%w\nCCM log tail:\n%s", err, r.ccm.Tail(30)) }
	if err := r.bulk(ctx, *scaleServices); err != nil {
		return fail(err)
	}
	if err := r.changes(ctx, 20); err != nil {
		return fail(err)
	}
	// Streams opened again (each starts with a snapshot) before the kill:
	// the CCM took live speakers for lost, which moves their VIPs and
	// spoils the figures above.
	report(r.name+"_speaker_reconnects", float64(r.reconnects()), "streams")
	if err := r.idle(ctx, 20*time.Second); err != nil {
		return fail(err)
	}
	if err := r.nodeLoss(); err != nil {
		return fail(err)
	}
	peak, err := peakRSS(r.ccm.Pid())
	if err != nil {
		return err
	}
	report(r.name+"_ccm_rss_mib", float64(peak)/(1<<20), "MiB")
	return nil
}

// startScale starts the control plane, deploy/, the shipped CCM inside a
// namespace and n simulated speakers, and applies the pool.
func startScale(ctx context.Context, n int) (r *scaleRig, err error) {
	r = &scaleRig{name: fmt.Sprintf("scale_%dn_%ds", n, *scaleServices)}
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	if r.cp, err = controlplane.Start(ctx, controlplane.Options{Dir: os.Getenv("IRONLB_BENCH_DIR")}); err != nil {
		return r, err
	}
	kubeconfig, err := rig.InstallDeploy(ctx, r.cp)
	if err != nil {
		return r, err
	}
	if r.lan, err = netrig.NewLANNoTest(); err != nil {
		return r, err
	}
	host, err := r.lan.AddHost("scale", scaleHostPrefix)
	if err != nil {
		return r, err
	}
	r.host = host
	prefixes, err := scaleNodePrefixes()
	if err != nil {
		return r, err
	}
	for _, p := range prefixes {
		if err := host.AddLocalRoute(p); err != nil {
			return r, err
		}
		if p.Addr().Is6() {
			// Linux binds IPv4 addresses of a local route, IPv6 ones only
			// with non-local binding.
			if _, err := host.Run("sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1"); err != nil {
				return r, err
			}
		}
	}
	ccmKubeconfig, err := relayKubeconfig(host, r.cp, kubeconfig)
	if err != nil {
		return r, err
	}
	if r.ccmPort, err = freePort(); err != nil {
		return r, err
	}
	r.ccm, err = rig.StartCCM(rig.CCMOptions{
		SecurePort: r.ccmPort, Name: "ironlb-ccm", Kubeconfig: ccmKubeconfig, LogDir: r.cp.Dir, Shipped: true, Args: extraCCMArgs(),
		Process: procs.Options{Wrap: []string{"ip", "netns", "exec", host.Name}, Env: []string{"POD_NAMESPACE=ironlb-system"}},
	})
	if err != nil {
		return r, err
	}
	start := time.Now()
	r.fleet, err = simspeakers.Start(ctx, simspeakers.Options{
		Client: r.cp.Client, Namespace: "ironlb-system", Nodes: n, Prefixes: prefixes, Listen: host.Listen,
	})
	if err != nil {
		return r, fmt.Errorf("%w\nCCM log tail:\n%s", err, r.ccm.Tail(30))
	}
	fmt.Fprintf(os.Stderr, "bench: %d simulated speakers started in %s\n", n, time.Since(start).Round(time.Millisecond))
	// Every speaker is a candidate before the Services come: a speaker
	// that connects later gets only new VIPs (assignments stay), which
	// skews the spread and the busiest node's loss.
	err = rig.Eventually(5*time.Minute, func() error {
		for _, s := range r.fleet.Speakers() {
			if s.Received()["snapshot"] == 0 {
				return fmt.Errorf("speaker %s has no snapshot", s.Node)
			}
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("%w\nCCM log tail:\n%s", err, r.ccm.Tail(30))
	}
	fmt.Fprintf(os.Stderr, "bench: every speaker had its snapshot %s after the fleet started\n", time.Since(start).Round(time.Millisecond))
	pool := "apiVersion: ironlb.dev/v1alpha1\nkind: IPPool\nmetadata: {name: scale}\nspec:\n  addresses: [\"" + scalePool.String() + "\"]\n"
	err = rig.Eventually(30*time.Second, func() error {
		out, err := r.cp.KubectlStdin(ctx, pool, "apply", "-f", "-")
		if err != nil {
			return fmt.Errorf("applying pool: %w\n%s", err, out)
		}
		return nil
	})
	return r, err
}

// reconnects counts the snapshots the speakers received beyond their
// first: each is a stream the CCM opened again.
func (r *scaleRig) reconnects() int {
	n := 0
	for _, s := range r.fleet.Speakers() {
		n += max(0, s.Received()["snapshot"]-1)
	}
	return n
}

// stop stops what startScale started.
func (r *scaleRig) stop() {
	if r.fleet != nil {
		r.fleet.Stop()
	}
	if r.ccm != nil {
		_ = r.ccm.Stop(10 * time.Second)
	}
	if r.lan != nil {
		_ = r.lan.Close()
	}
	if r.cp != nil {
		_ = r.cp.Stop()
	}
}

// ipv6 makes a Service single-stack IPv6 (the pool's family) without node
// ports: the API server's default range (30000-32767) holds 2,768, so
// more LoadBalancer Services than that need
// allocateLoadBalancerNodePorts: false, as IronLB's VIPs do not use them.
func ipv6(s *corev1.Service) {
	s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	s.Spec.AllocateLoadBalancerNodePorts = new(false)
}

// relayKubeconfig writes a copy of kubeconfig pointing at a relay to the
// API server inside host's namespace.
func relayKubeconfig(host *netrig.Host, cp *controlplane.ControlPlane, kubeconfig string) (string, error) {
	addr, err := host.Relay("127.0.0.1:0", strings.TrimPrefix(cp.URL, "https://"))
	if err != nil {
		return "", err
	}
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return "", fmt.Errorf("reading kubeconfig: %w", err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + addr.String()
	}
	path := filepath.Join(cp.Dir, "ccm-scale.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}
