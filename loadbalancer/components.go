package loadbalancer

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
	"github.com/ironlb/ironlb/loadbalancer/bgppeers"
	"github.com/ironlb/ironlb/loadbalancer/capiipam"
	"github.com/ironlb/ironlb/loadbalancer/dhcplease"
	"github.com/ironlb/ironlb/loadbalancer/kubeadm"
	"github.com/ironlb/ironlb/loadbalancer/lbclass"
	"github.com/ironlb/ironlb/loadbalancer/planner"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
	"github.com/ironlb/ironlb/loadbalancer/term"
	"github.com/ironlb/ironlb/pki"
)

// Config is what the load balancer's components need.
type Config struct {
	Client   kubernetes.Interface
	Dynamic  dynamic.Interface
	Recorder record.EventRecorder
	// Namespace holds the CA and the speakers' TLS Secret.
	Namespace string
	// Lease is the leader-election Lease (empty Name: leader election off).
	Lease term.Lease
	// Host names this CCM instance.
	Host string
	// Liveness, if set, are the watches of the speaker pods and Nodes this
	// replica started before it led (pki.StartLiveness); else they start
	// with the bundle.
	Liveness *pki.Liveness
	// Speakers configures the control channel; Planner the planner (its
	// Client, Recorder and Ready are filled in here).
	Speakers speakers.Options
	Planner  planner.Options
	// ControlPlaneVIPs are the control-plane VIPs of the cloud config,
	// never given to Services (nor the one of kube-system/kubeadm-config).
	ControlPlaneVIPs []netip.Addr
	// Class says which Services IronLB serves by loadBalancerClass.
	Class lbclass.Policy
	// ClassWorkers is how many Services of IronLB's class are synced at
	// once (the service controller's --concurrent-service-syncs).
	ClassWorkers int
	// ClassClient is the loadBalancerClass controller's own client (as
	// the service controller has its own); nil: Client.
	ClassClient kubernetes.Interface
}

// Components are the parts of IronLB's load balancer, wired together:
// the allocator and the IPPool controller that feeds it, the Balancer
// that answers the service controller, the Planner that decides which
// nodes announce each VIP, and the control channel to the speakers, under
// this leader's term.
type Components struct {
	Allocator *ipam.Allocator
	Pools     *ippool.Controller
	Balancer  *Balancer
	Planner   *planner.Planner
	Speakers  *speakers.Manager
	Peers     *bgppeers.Controller
	// Leases keeps the leases of DHCP-backed pools' addresses.
	Leases *dhcplease.Manager
	Term   *term.Term
	Bundle *pki.Bundle
	// KubeadmConfig follows kube-system/kubeadm-config.
	KubeadmConfig *kubeadm.Watcher
	// Classes serves the Services of IronLB's loadBalancerClass (made by
	// SetInformers).
	Classes *lbclass.Controller
	// Claims answers Cluster API IPAddressClaims naming IronLB IPPools
	// (once Cluster API's IPAM CRDs are installed).
	Claims *capiipam.Controller

	class        lbclass.Policy
	classWorkers int
	classClient  kubernetes.Interface
	client       kubernetes.Interface
	lease        term.Lease

	ctx context.Context // ends when this CCM stops leading
}

// StepDown ends this CCM's term, writes the Announced records of what it
// told the speakers (for at most recordsFlushLimit: the next leader
// believes them), and releases its Lease (see term.Term.StepDown), when
// it shuts down.
func (c *Components) StepDown(ctx context.Context) error {
	c.Term.End(ctx)
	fctx, cancel := context.WithTimeout(ctx, recordsFlushLimit)
	c.Planner.FlushRecords(fctx)
	cancel()
	return c.Term.StepDown(ctx, c.client, c.lease)
}

// recordsFlushLimit bounds the wait for the records at a step-down, so
// that the Lease is still released within the CCM's own 2 s step-down
// budget (cmd/ironlb-ccm: stepDownTimeout).
const recordsFlushLimit = time.Second

// livenessSyncTimeout bounds how long a new leader waits for the watches
// of the speaker pods and Nodes (warm already when the replica started
// them before it led).
const livenessSyncTimeout = 10 * time.Second

// NewComponents builds the components; Run starts them. It reads this
// leader's term and prepares the speakers' certificates, so it talks to
// the API server.
func NewComponents(ctx context.Context, cfg Config) (*Components, error) {
	t, ctx, err := term.Acquire(ctx, cfg.Client, cfg.Lease, cfg.Host)
	if err != nil {
		return nil, err
	}
	pkiOpts := []pki.Option{pki.WithRecorder(cfg.Recorder)}
	if cfg.Liveness != nil {
		pkiOpts = append(pkiOpts, pki.WithLiveness(cfg.Liveness))
	}
	bundle, err := pki.Bootstrap(ctx, cfg.Client, cfg.Namespace, pkiOpts...)
	if err != nil {
		return nil, fmt.Errorf("preparing the speakers' certificates in namespace %s: %w", cfg.Namespace, err)
	}
	// Before the planner's grace period for the speakers' first reports
	// starts (Run), not inside their handshakes.
	waitCtx, cancel := context.WithTimeout(ctx, livenessSyncTimeout)
	if !bundle.WaitForLiveness(waitCtx) {
		klog.InfoS("Speaker pods and Nodes not listed yet; speakers attest their certificates on their streams meanwhile (may the CCM list pods in its namespace and Nodes?)", "namespace", cfg.Namespace, "waited", livenessSyncTimeout)
	}
	cancel()
	alloc := ipam.New()
	pools, err := ippool.New(cfg.Dynamic, alloc, 10*time.Minute, ippool.WithRecorder(cfg.Recorder))
	if err != nil {
		return nil, fmt.Errorf("starting the IPPool controller: %w", err)
	}
	spOpts := cfg.Speakers
	spOpts.Identity = bundle
	spOpts.Leader = cfg.Host
	spOpts.Term = t.Value
	spOpts.Valid = t.Valid
	spOpts.Allocated = alloc
	sp := speakers.New(klog.NewContext(ctx, klog.Background()), spOpts)
	peers, err := bgppeers.New(cfg.Dynamic, cfg.Client, cfg.Namespace, sp, cfg.Recorder, 10*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("starting the BGPPeer controller: %w", err)
	}
	leases := dhcplease.New(sp)
	balOpts := []Option{WithClient(cfg.Client), WithControlPlaneVIPs(cfg.ControlPlaneVIPs), WithClass(cfg.Class), WithLeases(leases)}
	var bal *Balancer // set before the watcher runs (Run)
	kubeadmConfig, err := kubeadm.NewWatcher(cfg.Client, func(vip netip.Addr) {
		var vips []netip.Addr
		if vip.IsValid() {
			vips = append(vips, vip)
		}
		bal.SetControlPlaneVIPs(ControlPlaneFromKubeadm, vips)
	})
	if err != nil {
		return nil, fmt.Errorf("watching kube-system/kubeadm-config: %w", err)
	}
	balOpts = append(balOpts, WithControlPlaneSource(kubeadmConfig.HasSynced))
	// Machines' addresses come from the same allocator: restored right
	// after the Services', before any call is answered.
	claims := capiipam.New(cfg.Dynamic, cfg.Client.Discovery(), alloc, pools, cfg.Recorder, capiipam.Options{})
	balOpts = append(balOpts, WithRestorer(claims.Restore))
	bal = New(alloc, pools, cfg.Recorder, balOpts...)
	plOpts := cfg.Planner
	plOpts.Client, plOpts.Recorder, plOpts.Ready, plOpts.Peers = cfg.Client, cfg.Recorder, bal.Ready, peers
	plOpts.Class = cfg.Class
	plOpts.AddressInUse = bal.AddressInUse
	pl := planner.New(alloc, pools, sp, plOpts)
	bal.OnChange(pl.ServiceChanged)
	return &Components{
		Allocator: alloc, Pools: pools, Balancer: bal, Planner: pl, Speakers: sp, Peers: peers, Leases: leases, Term: t, Bundle: bundle,
		KubeadmConfig: kubeadmConfig, Claims: claims, ctx: ctx, client: cfg.Client, lease: cfg.Lease,
		class: cfg.Class, classWorkers: cfg.ClassWorkers, classClient: cmp.Or(cfg.ClassClient, cfg.Client),
	}, nil
}

// SetInformers hands the controller manager's shared informers to the
// Balancer, the Planner and the loadBalancerClass controller.
func (c *Components) SetInformers(factory informers.SharedInformerFactory) {
	c.Balancer.SetInformers(factory)
	c.Classes = lbclass.New(c.class, c.Balancer, c.classClient, factory, c.classWorkers)
	c.Planner.SetInformers(factory)
	c.Peers.SetNodeInformer(factory)
	c.Claims.SetInformers(factory)
}

// Run starts every component; they stop when this CCM stops leading.
func (c *Components) Run() {
	go c.Bundle.Run(c.ctx)
	go c.KubeadmConfig.Run(c.ctx)
	go c.Pools.Run(c.ctx)
	go c.Peers.Run(c.ctx)
	go c.Leases.Run(c.ctx)
	go c.Planner.Run(c.ctx)
	go c.Classes.Run(c.ctx)
	go c.Claims.Run(c.ctx, c.Balancer.Restored())
	go func() {
		if err := c.Balancer.Run(c.ctx); err != nil {
			klog.ErrorS(err, "Load balancer did not start")
		}
	}()
}
