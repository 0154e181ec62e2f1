// Package scalerig runs IronLB at scale on one machine: a real control
// plane, the shipped ironlb-ccm (and a standby) inside a network namespace
// and a fleet of simulated speakers (test/simspeakers), with half the
// Services in a layer-2 pool and half in a BGP pool, some of those with
// externalTrafficPolicy Local and EndpointSlices. Its measurements check
// where every VIP is announced and report figures through Options.Report;
// the bench's scale group and this package's test use it.
package scalerig

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/simspeakers"
)

// Options configures a Rig.
type Options struct {
	// Nodes is how many simulated nodes (and speakers) to run.
	Nodes int
	// Services names the point (scale_<Nodes>n_<Services>s); Bulk takes
	// the count itself.
	Services int
	// Layer2Only puts every Service in the layer-2 pool (figures named
	// scale_<Nodes>n_<Services>s_l2only_...): the layer-2 design alone,
	// at points where BGP's per-node reports of every BGP VIP dominate.
	Layer2Only bool
	// NodePrefixes are the documentation prefixes the nodes' addresses
	// come from, in order; default DefaultNodePrefixes. Each must be
	// disjoint from HostPrefix and the pools.
	NodePrefixes []netip.Prefix
	// Standby starts a second shipped CCM once the first leads (for
	// Handover).
	Standby bool
	// CCMArgs are flags added to the shipped ones (experiments only).
	CCMArgs []string
	// Dir is the control plane's folder (logs); empty: a temporary one.
	Dir string
	// ProfileDir, if set, receives the CCM's CPU profiles of Idle and
	// Churn.
	ProfileDir string
	// Report receives every figure (default: printed as BENCH lines).
	Report func(name string, value float64, unit string)
	// Log receives progress lines (default os.Stderr).
	Log io.Writer
}

// DefaultNodePrefixes hold 508 nodes; more need IPv6 ones (for example
// 2001:db8:100::/112).
var DefaultNodePrefixes = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24")}

// HostPrefix is the namespace's own address; the BGP peer's address is in
// it too (no process listens there: the speakers' BGP side is simulated).
var HostPrefix = netip.MustParsePrefix("203.0.113.1/24")

// Rig is one scale point's running system.
type Rig struct {
	// Name is the figures' prefix, scale_<N>n_<M>s.
	Name  string
	CP    *controlplane.ControlPlane
	Fleet *simspeakers.Fleet
	// CCM is the leading CCM; Standby the other one (nil without
	// Options.Standby, or after Handover).
	CCM     *procs.Process
	Standby *procs.Process

	opts    Options
	lan     *netrig.LAN
	host    *netrig.Host // the namespace of the CCMs and the speakers
	ccmPort int          // the leading CCM's secure port (127.0.0.1 in host)
	stbPort int
	// local are the endpoint nodes of each Service with
	// externalTrafficPolicy Local, by name (namespace default).
	local map[string][]string
}

// Start starts the control plane, deploy/, the shipped CCM inside a
// namespace, the simulated speakers, the pools and the BGP peer; with
// Options.Standby a second CCM once the first leads.
func Start(ctx context.Context, opts Options) (r *Rig, err error) {
	if len(opts.NodePrefixes) == 0 {
		opts.NodePrefixes = DefaultNodePrefixes
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	if opts.Report == nil {
		opts.Report = func(name string, value float64, unit string) {
			fmt.Printf("BENCH %s %s %s\n", name, strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", value), "0"), "."), unit)
		}
	}
	for _, p := range opts.NodePrefixes {
		if p.Overlaps(HostPrefix) || p.Overlaps(L2Pool) || p.Overlaps(BGPPool) {
			return nil, fmt.Errorf("node prefix %s overlaps %s or a pool (%s, %s)", p, HostPrefix, L2Pool, BGPPool)
		}
	}
	r = &Rig{Name: fmt.Sprintf("scale_%dn_%ds", opts.Nodes, opts.Services), opts: opts, local: map[string][]string{}}
	layer2Only = opts.Layer2Only
	if opts.Layer2Only {
		r.Name += "_l2only"
	}
	defer func() {
		if err != nil {
			if r.CCM != nil {
				err = fmt.Errorf("%w\nCCM log tail:\n%s", err, r.CCM.Tail(30))
			}
			r.Stop()
		}
	}()
	if r.CP, err = controlplane.Start(ctx, controlplane.Options{Dir: opts.Dir}); err != nil {
		return r, err
	}
	kubeconfig, err := rig.InstallDeploy(ctx, r.CP)
	if err != nil {
		return r, err
	}
	if r.lan, err = netrig.NewLANNoTest(); err != nil {
		return r, err
	}
	if r.host, err = r.lan.AddHost("scale", HostPrefix); err != nil {
		return r, err
	}
	for _, p := range opts.NodePrefixes {
		if err := r.host.AddLocalRoute(p.Masked()); err != nil {
			return r, err
		}
		if p.Addr().Is6() {
			// Linux binds IPv4 addresses of a local route, IPv6 ones only
			// with non-local binding.
			if _, err := r.host.Run("sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1"); err != nil {
				return r, err
			}
		}
	}
	ccmKubeconfig, err := relayKubeconfig(r.host, r.CP, kubeconfig)
	if err != nil {
		return r, err
	}
	if r.CCM, r.ccmPort, err = r.startCCM("ironlb-ccm", ccmKubeconfig); err != nil {
		return r, err
	}
	if err := setNice(os.Getpid(), speakersNice); err != nil {
		return r, err
	}
	start := time.Now()
	r.Fleet, err = simspeakers.Start(ctx, simspeakers.Options{
		Client: r.CP.Client, Namespace: "ironlb-system", Nodes: opts.Nodes, Prefixes: opts.NodePrefixes, Listen: r.host.Listen,
	})
	if err != nil {
		return r, err
	}
	r.logf("%d simulated speakers started in %s", opts.Nodes, time.Since(start).Round(time.Millisecond))
	// Every speaker is a candidate before the Services come: a speaker
	// that connects later gets only new VIPs (assignments stay), which
	// skews the spread and the busiest node's loss.
	err = rig.Eventually(5*time.Minute, func() error {
		for _, s := range r.Fleet.Speakers() {
			if s.Received()["snapshot"] == 0 {
				return fmt.Errorf("speaker %s has no snapshot", s.Node)
			}
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	r.logf("every speaker had its snapshot %s after the fleet started", time.Since(start).Round(time.Millisecond))
	if err := r.applyPools(ctx); err != nil {
		return r, err
	}
	if opts.Standby {
		if r.Standby, r.stbPort, err = r.startCCM("ironlb-ccm-standby", ccmKubeconfig); err != nil {
			return r, err
		}
		// Started from this process: back to the CCMs' priority.
		if err := setNice(r.Standby.Pid(), 0); err != nil {
			return r, err
		}
	}
	return r, nil
}

// startCCM starts a shipped CCM named name in the rig's namespace.
func (r *Rig) startCCM(name, kubeconfig string) (*procs.Process, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	p, err := rig.StartCCM(rig.CCMOptions{
		SecurePort: port, Name: name, Kubeconfig: kubeconfig, LogDir: r.CP.Dir, Shipped: true, Args: r.opts.CCMArgs,
		Process: procs.Options{Wrap: []string{"ip", "netns", "exec", r.host.Name}, Env: []string{"POD_NAMESPACE=ironlb-system"}},
	})
	if err != nil {
		return nil, 0, fmt.Errorf("starting %s: %w", name, err)
	}
	return p, port, nil
}

// Reconnects counts the snapshots the speakers received beyond their
// first: each is a stream the CCM opened again (before a handover: a live
// speaker taken for lost).
func (r *Rig) Reconnects() int {
	n := 0
	for _, s := range r.Fleet.Speakers() {
		n += max(0, s.Received()["snapshot"]-1)
	}
	return n
}

// PeakRSS reports the leading CCM's peak RSS (MiB); with
// Options.ProfileDir, it also takes the CCM's heap profile.
func (r *Rig) PeakRSS(ctx context.Context) error {
	peak, err := procs.PeakRSS(r.CCM.Pid())
	if err != nil {
		return err
	}
	r.report("ccm_rss_mib", float64(peak)/(1<<20), "MiB")
	if r.opts.ProfileDir == "" {
		return nil
	}
	return r.fetchProfile(ctx, "heap", time.Minute, r.Name+"_heap.pprof", "heap")
}

// Tail is the leading CCM's log tail, for errors.
func (r *Rig) Tail() string {
	if r.CCM == nil {
		return ""
	}
	return r.CCM.Tail(30)
}

// Stop stops what Start started.
func (r *Rig) Stop() {
	if r.Fleet != nil {
		r.Fleet.Stop()
	}
	for _, p := range []*procs.Process{r.Standby, r.CCM} {
		if p != nil {
			_ = p.Stop(10 * time.Second)
		}
	}
	if r.lan != nil {
		_ = r.lan.Close()
	}
	if r.CP != nil {
		_ = r.CP.Stop()
	}
}

// report sends the figure name (after the point's prefix) to
// Options.Report.
func (r *Rig) report(name string, value float64, unit string) {
	r.opts.Report(r.Name+"_"+name, value, unit)
}

// logf writes a progress line.
func (r *Rig) logf(format string, args ...any) {
	fmt.Fprintf(r.opts.Log, "scale: "+format+"\n", args...)
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

// freePort returns a TCP port free on the loopback address now (the CCMs'
// secure ports, inside the namespace, where nothing else listens).
func freePort() (int, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port, nil
}
