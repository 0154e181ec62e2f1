// Package cluster builds a real multi-node Kubernetes v1.37.2 cluster on
// this machine, with no Docker and no kind, the way IronLB's users build
// theirs: kubeadm on bare metal with --cloud-provider=external.
//
// Each node is a machine (package machine): a network namespace on the
// rig's LAN plus PID, mount and UTS namespaces with its own root, running
// Debian's containerd and runc and the kubelet v1.37.2 as services.
// kubeadm init makes node-1 the control plane (static pods of
// kube-apiserver, kube-controller-manager, kube-scheduler and etcd, from
// images built here: package images), kubeadm join adds the others;
// kube-proxy (nftables mode) and CoreDNS are kubeadm's addons. The pod
// network is Debian's CNI bridge and host-local plugins on each node's
// Node.spec.podCIDR, with routes between the nodes. A router running FRR
// links the LAN to an outside segment with a client, off the nodes'
// subnet, from where the cluster is administered and its VIPs are reached.
// IronLB is installed as its docs (docs/install.md) tell a user: its images imported
// into every node's containerd, then kubectl apply --server-side -k deploy/.
//
// Up runs the steps (phases) in order and returns the running Cluster;
// Close tears everything down. Attach finds a cluster another process
// made (make cluster's daemon) from its folder.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ironlb/ironlb/test/cluster/machine"
	"github.com/ironlb/ironlb/test/netrig"
)

// Options configures a cluster.
type Options struct {
	// Dir is the cluster's folder: machines, kubeconfigs, logs. Close
	// removes it.
	Dir string
	// Nodes is how many nodes: ControlPlanes control-plane nodes (node-1
	// first) and the rest workers (default 3, at most MaxNodes).
	Nodes int
	// ControlPlanes is how many of the nodes run the control plane
	// (default 1). More than one is a highly available control plane
	// behind IronLB's control-plane VIP (ControlPlaneVIP): kubeadm init on
	// node-1 with --upload-certs, kubeadm join --control-plane on the
	// others through the VIP. It needs IronLBImages (the speaker image
	// runs the VIP).
	ControlPlanes int
	// VIP makes the control-plane endpoint IronLB's control-plane VIP
	// (ControlPlaneVIP:6443, held by the ironlb-speaker control-plane
	// static pod on every control-plane node) even with one control-plane
	// node; more than one control-plane node implies it.
	VIP bool
	// ToolsBin holds the Kubernetes binaries (make controlplane): kubeadm,
	// kubelet, kubectl, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kube-proxy, etcd, agnhost, and pause; coredns too
	// unless NoCoreDNS.
	ToolsBin string
	// ImageCache is where built images are kept between clusters.
	ImageCache string
	// RepoRoot is IronLB's checkout: deploy/ is installed from there.
	RepoRoot string
	// IronLBImages holds the OCI image layouts ironlb-ccm and
	// ironlb-speaker (make image: bin/images), tagged as deploy/ names
	// them. Empty: IronLB is not installed (nodes stay uninitialized).
	IronLBImages string
	// NoCoreDNS skips kubeadm's CoreDNS addon.
	NoCoreDNS bool
	// KeepOnFailure leaves a cluster that failed to come up running, to
	// look at (Remove or ironlb-cluster down removes it).
	KeepOnFailure bool
	// Log receives progress lines (default: discarded).
	Log io.Writer `json:"-"`
}

// Cluster is a running cluster.
type Cluster struct {
	// Dir is the cluster's folder.
	Dir string
	// Nodes are the node machines; the first ControlPlanes of them run
	// the control plane.
	Nodes []*machine.Machine
	// Client is the outside host behind the router (203.0.113.10), from
	// where the cluster is administered.
	Client *netrig.Host
	// Kubeconfig is the admin kubeconfig (kubeadm's admin.conf): usable
	// from Client's namespace.
	Kubeconfig string

	opts       Options
	id         string // names this cluster's cgroups: ilbt<pid>-<n>, like its namespaces
	cgroupBase string
	net        *network
	token      string
	certKey    string            // kubeadm's certificate key, of --upload-certs (HA only)
	layouts    map[string]string // image ref → OCI layout, of the images phase

	closeOnce sync.Once
	closeErr  error
}

// Phase is one named step of Up.
type Phase struct {
	Name string
	Run  func(c *Cluster, ctx context.Context) error
}

// Phases are Up's steps, in order.
var Phases = []Phase{
	{"network", (*Cluster).phaseNetwork},
	{"images", (*Cluster).phaseImages},
	{"machines", (*Cluster).phaseMachines},
	{"load-images", (*Cluster).phaseLoadImages},
	{"control-plane-vip", (*Cluster).phaseControlPlaneVIP},
	{"kubeadm-init", (*Cluster).phaseInit},
	{"kubeadm-join-control-plane", (*Cluster).phaseJoinControlPlane},
	{"kubeadm-join", (*Cluster).phaseJoin},
	{"pod-network", (*Cluster).phasePodNetwork},
	{"ironlb", (*Cluster).phaseIronLB},
	{"ready", (*Cluster).phaseReady},
}

// Up builds and starts a cluster, running Phases in order; on error it
// tears down what it made.
func Up(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 1 || opts.Nodes > MaxNodes {
		return nil, fmt.Errorf("nodes: %d, want 1 to %d", opts.Nodes, MaxNodes)
	}
	if opts.ControlPlanes == 0 {
		opts.ControlPlanes = 1
	}
	if opts.ControlPlanes < 1 || opts.ControlPlanes > opts.Nodes {
		return nil, fmt.Errorf("control-plane nodes: %d, want 1 to the number of nodes (%d)", opts.ControlPlanes, opts.Nodes)
	}
	if opts.ControlPlanes > 1 {
		opts.VIP = true
	}
	if opts.VIP && opts.IronLBImages == "" {
		return nil, fmt.Errorf("the control-plane VIP runs in IronLB's speaker image: IronLBImages is needed")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if err := netrig.Usable(); err != nil {
		return nil, err
	}
	if err := checkTools(opts); err != nil {
		return nil, err
	}
	if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	base, err := machine.CgroupBase()
	if err != nil {
		return nil, err
	}
	// What killed makers of earlier clusters left behind.
	if err := netrig.Sweep(); err != nil {
		fmt.Fprintf(opts.Log, "sweeping old namespaces: %v\n", err)
	}
	if err := machine.SweepCgroups(base, netrig.Prefix); err != nil {
		fmt.Fprintf(opts.Log, "sweeping old cgroups: %v\n", err)
	}
	c = &Cluster{
		Dir:        opts.Dir,
		Kubeconfig: filepath.Join(opts.Dir, "kubeconfig"),
		opts:       opts,
		id:         fmt.Sprintf("%s%d-%d", netrig.Prefix, os.Getpid(), time.Now().UnixNano()%100000),
		cgroupBase: base,
	}
	defer func() {
		if err != nil && opts.KeepOnFailure {
			c.logf("kept after the failure: %s", c.Dir)
			_ = c.SaveState()
			c = nil
			return
		}
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				c.logf("tearing down after the failure: %v", cerr)
			}
			c = nil
		}
	}()
	start := time.Now()
	for _, p := range Phases {
		t := time.Now()
		c.logf("[%s]", p.Name)
		if err := p.Run(c, ctx); err != nil {
			return c, fmt.Errorf("phase %s: %w", p.Name, err)
		}
		c.logf("[%s] done in %s", p.Name, time.Since(t).Round(100*time.Millisecond))
	}
	c.logf("cluster up in %s", time.Since(start).Round(time.Second))
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.opts.Log, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// checkTools says which binaries are missing, and how to get them.
func checkTools(opts Options) error {
	need := []string{"kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd", "agnhost", "pause"}
	if !opts.NoCoreDNS {
		need = append(need, "coredns")
	}
	var missing []string
	for _, b := range need {
		if _, err := os.Stat(filepath.Join(opts.ToolsBin, b)); err != nil {
			missing = append(missing, b)
		}
	}
	for _, b := range []string{"/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback", "/usr/lib/cni/portmap", "/usr/sbin/nft", "/usr/bin/nsenter"} {
		if _, err := os.Stat(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (make cluster-tools installs and builds them)", strings.Join(missing, ", "))
	}
	if opts.IronLBImages != "" {
		return checkIronLBImages(opts.IronLBImages, opts.RepoRoot)
	}
	return nil
}

func (c *Cluster) phaseNetwork(ctx context.Context) error {
	net, err := buildNetwork(c.opts.Nodes)
	if err != nil {
		return err
	}
	c.net, c.Client = net, net.client
	return nil
}

func (c *Cluster) phaseMachines(ctx context.Context) error {
	for i, h := range c.net.nodes {
		spec, err := c.nodeSpec(i+1, h.Name)
		if err != nil {
			return err
		}
		m, err := machine.Start(spec)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, m)
	}
	return nil
}

// Close tears the cluster down: machines (every process, container and
// cgroup of theirs), the network (FRR, namespaces), the folder.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for i := len(c.Nodes) - 1; i >= 0; i-- {
			if err := c.Nodes[i].Stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if c.net != nil {
			if err := c.net.close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}
