package rig

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
)

// The layer-2 rig's addresses, all from documentation ranges: nodes
// 192.0.2.11.. and 2001:db8:100::11.., the CCM's host .2, the client .100,
// and pools in 192.0.2.192/27 and 2001:db8:100::200/120.
var (
	LANv4      = netip.MustParsePrefix("192.0.2.0/24")
	LANv6      = netip.MustParsePrefix("2001:db8:100::/64")
	PoolV4     = netip.MustParsePrefix("192.0.2.192/27")
	PoolV6     = netip.MustParsePrefix("2001:db8:100::200/120")
	ClientIPv4 = netip.MustParseAddr("192.0.2.100")
	ClientIPv6 = netip.MustParseAddr("2001:db8:100::100")
)

// ServicePort is where every node's responder listens, standing in for
// kube-proxy delivering VIP traffic to a backend.
const ServicePort = 80

// L2Options configures a layer-2 rig.
type L2Options struct {
	// Nodes is the number of nodes (default 3).
	Nodes int
	// Kubeconfig the CCM uses; default the admin kubeconfig.
	Kubeconfig string
	// SecretNamespace is where the CCM keeps the speakers' TLS Secret.
	SecretNamespace string
	// CCMArgs are extra ironlb-ccm flags.
	CCMArgs []string
	// CloudConfig, when set, is written to a file passed as --cloud-config.
	CloudConfig string
	// LogDir receives the processes' logs; default a folder in the
	// control plane's.
	LogDir string
	// Replicas, when 2 or more, runs that many CCMs as deploy/ ships them
	// (StartCCMReplica): leader election on, the shipped flags and
	// defaults. Otherwise one CCM runs without leader election.
	Replicas int
	// ExtraPrefixes are more pool prefixes: the nodes route them locally
	// and the client reaches them on the LAN (a route on its interface).
	ExtraPrefixes []netip.Prefix
	// SpeakerArgs are extra ironlb-speaker flags.
	SpeakerArgs []string
	// MetricsAuth leaves the CCMs' /metrics to their delegated
	// authorization, as shipped: a caller needs a token allowed GET
	// /metrics. Otherwise tests read /metrics without a token.
	MetricsAuth bool
	// SpeakerCapabilities, when set, are the only capabilities the
	// speakers keep (setpriv's list, e.g. "net_raw"), as the DaemonSet
	// grants them; otherwise they run as plain root.
	SpeakerCapabilities string
}

// L2Node is one simulated node: a namespace on the LAN running the real
// speaker and a responder answering with the node's name.
type L2Node struct {
	Name      string
	Host      *netrig.Host
	IPv4      netip.Addr
	IPv6      netip.Addr
	TLSDir    string // the speaker's ca.crt and token
	Speaker   *procs.Process
	Responder *netrig.Responder
	restarts  int
}

// L2 is the layer-2 rig: nodes, a client and the CCM on one LAN, with the
// control plane on the host's loopback reached through relays.
type L2 struct {
	CP     *controlplane.ControlPlane
	LAN    *netrig.LAN
	Ctrl   *netrig.Host
	Client *netrig.Host
	Nodes  []*L2Node
	CCM    *procs.Process
	LogDir string

	opts       L2Options
	kubeconfig string // the CCM's, pointing at the relay

	mu   sync.Mutex
	ccms []*procs.Process
}

// StartL2 builds the LAN, registers the nodes, starts the CCM in its own
// namespace and a speaker on every node. Close (or the LAN's owner) removes
// everything; on error, what was started is stopped.
func StartL2(ctx context.Context, cp *controlplane.ControlPlane, lan *netrig.LAN, opts L2Options) (r *L2, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Kubeconfig == "" {
		opts.Kubeconfig = cp.KubeconfigPath
	}
	if opts.SecretNamespace == "" {
		opts.SecretNamespace = "ironlb-system"
	}
	if opts.LogDir == "" {
		opts.LogDir = filepath.Join(cp.Dir, "l2")
	}
	if err := os.MkdirAll(opts.LogDir, 0o755); err != nil {
		return nil, err
	}
	r = &L2{CP: cp, LAN: lan, LogDir: opts.LogDir, opts: opts}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	if r.Ctrl, err = lan.AddHost("ctrl", pfx(LANv4, 2), pfx(LANv6, 2)); err != nil {
		return r, err
	}
	if r.Client, err = lan.AddHost("client", netip.PrefixFrom(ClientIPv4, 24), netip.PrefixFrom(ClientIPv6, 64)); err != nil {
		return r, err
	}
	if err := r.relayKubeconfig(); err != nil {
		return r, err
	}
	if err := ensureNamespace(ctx, cp, opts.SecretNamespace); err != nil {
		return r, err
	}
	for _, p := range opts.ExtraPrefixes {
		if !LANv4.Overlaps(p) && !LANv6.Overlaps(p) {
			if _, err := r.Client.Run("ip", "route", "add", p.String(), "dev", r.Client.Interface); err != nil {
				return r, fmt.Errorf("routing %s to the LAN from the client: %w", p, err)
			}
		}
	}
	for i := range opts.Nodes {
		if _, err := r.AddNode(ctx, fmt.Sprintf("node-%c", 'a'+i), 11+i); err != nil {
			return r, err
		}
	}
	if opts.Replicas >= 2 {
		for i := range opts.Replicas {
			if _, err := r.StartCCMReplica(fmt.Sprintf("ccm-%c", 'a'+i), ccmSecurePort+i); err != nil {
				return r, err
			}
		}
	} else if err := r.StartCCM("ironlb-ccm", false); err != nil {
		return r, err
	}
	for _, n := range r.Nodes {
		if err := r.StartSpeaker(ctx, n); err != nil {
			return r, err
		}
	}
	return r, nil
}

func pfx(p netip.Prefix, host int) netip.Prefix {
	if p.Addr().Is4() {
		b := p.Addr().As4()
		b[3] = byte(host)
		return netip.PrefixFrom(netip.AddrFrom4(b), p.Bits())
	}
	// Hosts are numbered like their IPv4 twin: ::11 for .11.
	a := p.Addr().As16()
	h, _ := strconv.ParseUint(strconv.Itoa(host), 16, 16)
	a[14], a[15] = byte(h>>8), byte(h)
	return netip.PrefixFrom(netip.AddrFrom16(a), p.Bits())
}

// relayKubeconfig opens a relay in the control namespace to the API server
// and writes the CCM's kubeconfig pointing at it.
func (r *L2) relayKubeconfig() error {
	host := strings.TrimPrefix(r.CP.URL, "https://")
	addr, err := r.Ctrl.Relay("127.0.0.1:0", host)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.LoadFromFile(r.opts.Kubeconfig)
	if err != nil {
		return fmt.Errorf("reading kubeconfig: %w", err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + addr.String()
	}
	r.kubeconfig = filepath.Join(r.LogDir, "ccm.kubeconfig")
	return clientcmd.WriteToFile(*cfg, r.kubeconfig)
}

// AddNode adds a node namespace with host number n (.n and ::n), registers
// its Node the way a kubelet with --cloud-provider=external does, starts
// its responder and routes the pools to it locally (kube-proxy's IPVS
// binding, with arp_ignore=1 so only the speaker answers ARP).
func (r *L2) AddNode(ctx context.Context, name string, n int) (*L2Node, error) {
	v4, v6 := pfx(LANv4, n), pfx(LANv6, n)
	h, err := r.LAN.AddHost(strings.ReplaceAll(name, "-", ""), v4, v6)
	if err != nil {
		return nil, err
	}
	node := &L2Node{Name: name, Host: h, IPv4: v4.Addr(), IPv6: v6.Addr()}
	for _, p := range append([]netip.Prefix{PoolV4, PoolV6}, r.opts.ExtraPrefixes...) {
		if p.Overlaps(PoolV4) || p.Overlaps(PoolV6) {
			if p != PoolV4 && p != PoolV6 {
				return nil, fmt.Errorf("extra prefix %s overlaps the rig's pools %s, %s", p, PoolV4, PoolV6)
			}
		}
		if err := h.AddLocalRoute(p); err != nil {
			return nil, err
		}
	}
	if node.Responder, err = h.Serve(ServicePort, name); err != nil {
		return nil, err
	}
	if _, err := RegisterNode(ctx, r.CP.Client, name, v4.Addr().String()+","+v6.Addr().String(), nil); err != nil {
		return nil, err
	}
	r.Nodes = append(r.Nodes, node)
	return node, nil
}

// SetCloudConfig sets the cloud config that CCMs started from now on get
// (StartCCM), e.g. before a restart with another configuration.
func (r *L2) SetCloudConfig(yaml string) { r.opts.CloudConfig = yaml }

// StartCCM starts ironlb-ccm in the control namespace.
func (r *L2) StartCCM(name string, leaderElect bool) error {
	args := r.alwaysAllow()
	if r.opts.CloudConfig != "" {
		path := filepath.Join(r.LogDir, "cloud-config.yaml")
		if err := os.WriteFile(path, []byte(r.opts.CloudConfig), 0o644); err != nil {
			return err
		}
		args = append(args, "--cloud-config="+path)
	}
	p, err := StartCCM(CCMOptions{
		Name: name, Kubeconfig: r.kubeconfig, LogDir: r.LogDir, LeaderElect: leaderElect,
		Args:       append(args, r.opts.CCMArgs...),
		SecurePort: ccmSecurePort, // each CCM has its own namespace
		Process: procs.Options{
			Wrap: []string{"ip", "netns", "exec", r.Ctrl.Name},
			Env:  []string{"POD_NAMESPACE=" + r.opts.SecretNamespace},
		},
	})
	if err != nil {
		return err
	}
	r.CCM = p
	r.mu.Lock()
	r.ccms = append(r.ccms, p)
	r.mu.Unlock()
	return nil
}

// StartCCMReplica starts one replica of ironlb-ccm in the control
// namespace as deploy/ ships it (its flags and the binary's defaults,
// leader election on), serving /metrics on securePort.
func (r *L2) StartCCMReplica(name string, securePort int) (*procs.Process, error) {
	p, err := StartCCM(CCMOptions{
		Name: name, Kubeconfig: r.kubeconfig, LogDir: r.LogDir, Shipped: true, Namespace: r.opts.SecretNamespace,
		Args:       append(r.alwaysAllow(), r.opts.CCMArgs...),
		SecurePort: securePort,
		Process: procs.Options{
			Wrap: []string{"ip", "netns", "exec", r.Ctrl.Name},
			Env:  []string{"POD_NAMESPACE=" + r.opts.SecretNamespace},
		},
	})
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.CCM == nil {
		r.CCM = p
	}
	r.ccms = append(r.ccms, p)
	r.mu.Unlock()
	return p, nil
}

// alwaysAllow is the CCM flag that lets tests read /metrics without a
// token, unless MetricsAuth is set (then the binary's default list,
// /healthz, /readyz and /livez, applies).
func (r *L2) alwaysAllow() []string {
	if r.opts.MetricsAuth {
		return nil
	}
	return []string{"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"}
}

// CCMGetFrom fetches path from the secure port of the CCM serving on port.
func (r *L2) CCMGetFrom(ctx context.Context, port int, path string) (string, error) {
	return r.get(ctx, r.Ctrl, "https://127.0.0.1:"+strconv.Itoa(port)+path)
}

// CCMSecurePort is where the rig's (first) CCM serves /metrics and
// /healthz; replicas use the ports after it.
const CCMSecurePort = ccmSecurePort

// ccmSecurePort is where the rig's CCMs serve /metrics and /healthz.
const ccmSecurePort = 10258

// Node returns the node named name.
func (r *L2) Node(name string) *L2Node {
	for _, n := range r.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// NodeByMAC returns the node whose interface has mac.
func (r *L2) NodeByMAC(mac net.HardwareAddr) *L2Node {
	for _, n := range r.Nodes {
		if n.Host.MAC.String() == mac.String() {
			return n
		}
	}
	return nil
}

// Stop stops the CCM and the speakers (the LAN's owner removes the
// namespaces).
func (r *L2) Stop() {
	for _, n := range r.Nodes {
		if n.Speaker != nil {
			_ = n.Speaker.Stop(5 * time.Second)
		}
	}
	for _, p := range r.CCMs() {
		_ = p.Stop(10 * time.Second)
	}
}

// Logs returns the tails of every process's log, for failed tests.
func (r *L2) Logs(lines int) string {
	var b strings.Builder
	if r.CCM != nil {
		fmt.Fprintf(&b, "--- %s\n%s\n", r.CCM.Name, r.CCM.Tail(lines))
	}
	for _, n := range r.Nodes {
		if n.Speaker != nil {
			fmt.Fprintf(&b, "--- %s\n%s\n", n.Speaker.Name, n.Speaker.Tail(lines))
		}
	}
	return b.String()
}

// CCMMetrics fetches the running CCM's /metrics.
func (r *L2) CCMMetrics(ctx context.Context) (string, error) { return r.CCMGet(ctx, "/metrics") }

// CCMGet fetches path from the running CCM's secure port, from inside its
// namespace.
func (r *L2) CCMGet(ctx context.Context, path string) (string, error) {
	return r.get(ctx, r.Ctrl, "https://127.0.0.1:"+strconv.Itoa(ccmSecurePort)+path)
}

// SpeakerMetrics fetches a speaker's /metrics from the client namespace.
func (r *L2) SpeakerMetrics(ctx context.Context, n *L2Node) (string, error) {
	return r.SpeakerGet(ctx, n, "/metrics")
}

// SpeakerGet fetches path from a speaker's health port.
func (r *L2) SpeakerGet(ctx context.Context, n *L2Node, path string) (string, error) {
	return r.get(ctx, r.Client, "http://"+net.JoinHostPort(n.IPv4.String(), "7474")+path)
}

func (r *L2) get(ctx context.Context, from *netrig.Host, url string) (string, error) {
	return Get(ctx, from.DialContext, url)
}

// Get fetches url (http or https; a self-signed certificate is accepted:
// the CCM's serving certificate) through dial (nil: the host's network)
// and returns the body of a 200 answer.
func Get(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), url string) (string, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:     dial,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the CCM's self-signed serving cert
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}

// errStop ends Eventually early.
var errStop = errors.New("giving up")

// InstallDeploy applies deploy/ (kubectl apply -k, server-side) and returns
// a kubeconfig with a token of the ironlb-ccm ServiceAccount, so the CCM
// runs with exactly the permissions IronLB ships.
func InstallDeploy(ctx context.Context, cp *controlplane.ControlPlane) (string, error) {
	root, err := binaries.RepoRoot()
	if err != nil {
		return "", err
	}
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy")); err != nil {
		return "", fmt.Errorf("applying deploy/: %w\n%s", err, out)
	}
	return cp.ServiceAccountKubeconfig(ctx, "ironlb-system", "ironlb-ccm")
}

// CCMs returns the CCM processes started so far, oldest first.
func (r *L2) CCMs() []*procs.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*procs.Process(nil), r.ccms...)
}

// SecretNamespace is where the CCM keeps its Secrets (the speakers' TLS,
// BGP passwords).
func (r *L2) SecretNamespace() string { return r.opts.SecretNamespace }

// ensureNamespace creates namespace ns unless it exists (deploy/ creates
// ironlb-system; rigs without deploy/ need it too).
func ensureNamespace(ctx context.Context, cp *controlplane.ControlPlane, ns string) error {
	_, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	return nil
}
