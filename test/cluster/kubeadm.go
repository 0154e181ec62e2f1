package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ironlb/ironlb/test/cluster/images"
	"github.com/ironlb/ironlb/test/cluster/machine"
)

// kubeadmDir is where the rig writes kubeadm's configuration on a node.
const kubeadmDir = "/etc/kubeadm"

// clusterConfig is kubeadm's ClusterConfiguration, KubeletConfiguration and
// KubeProxyConfiguration, shared by every node.
//
//   - kube-controller-manager allocates each node a /27 of the pod range
//     (the rig's pod network reads it from Node.spec.podCIDR); it runs no
//     cloud controllers (IronLB's CCM does: --cloud-provider unset).
//   - The kubelet uses the cgroupfs driver and accepts cgroup v1, which is
//     what this machine mounts; containerd 1.6 lacks the CRI RuntimeConfig
//     call, so the kubelet falls back to its own cgroupDriver.
//   - The kubelet's disk eviction thresholds are 1 %: every node's
//     filesystems are the host's one disk, shared with everything else on
//     it, and the defaults (15 % for images, 10 % for the node) tainted
//     every node node.kubernetes.io/disk-pressure, leaving test pods
//     Pending, once the host disk was about 85 % full. (Setting
//     evictionHard replaces all its defaults, so memory stays at 100Mi.)
//   - kube-proxy runs in nftables mode (the kernel has no IPVS) and leaves
//     the conntrack table size alone: nf_conntrack_max is global, and the
//     nodes share one kernel.
//
// endpoint is the control-plane endpoint (Cluster.Endpoint): node-1's
// address, or the control-plane VIP; kubeadm puts it in every kubeconfig
// and in the API servers' certificates.
func clusterConfig(endpoint netip.Addr) string {
	return fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: ironlb
kubernetesVersion: %s
controlPlaneEndpoint: "%s:6443"
networking:
  podSubnet: %s
  serviceSubnet: %s
  dnsDomain: cluster.local
controllerManager:
  extraArgs:
    - name: node-cidr-mask-size-ipv4
      value: "%d"
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
  imagefs.inodesFree: 1%%
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
conntrack:
  maxPerCore: 0
`, images.KubernetesVersion, endpoint, PodCIDR, ServiceCIDR, PodCIDRBits)
}

// nodeRegistration is the part of kubeadm's Init- and JoinConfiguration
// about node n: its name, containerd, the kubelet flags IronLB's install
// guide asks for (--cloud-provider=external, --node-ip), images that are
// never pulled (nothing can be pulled here; every image is loaded into
// containerd), and the per-node kubelet patch (its cgroup root).
func nodeRegistration(n int) string {
	return fmt.Sprintf(`nodeRegistration:
  name: %s
  criSocket: %s
  imagePullPolicy: Never
  kubeletExtraArgs:
    - name: cloud-provider
      value: external
    - name: node-ip
      value: "%s"
  ignorePreflightErrors:
%spatches:
  directory: %s/patches
`, NodeName(n), criSocket, NodeIP(n), ignoredPreflight(), kubeadmDir)
}

// ignoredPreflight lists the kubeadm preflight checks the rig's machines
// cannot pass, with why (see RIG.md):
//   - SystemVerification: this machine mounts cgroup v1. Every kernel
//     option and controller it checks is there; its one error says that
//     cgroup v1 needs failCgroupV1: false in the kubelet (set) "and you
//     must also explicitly skip this validation".
func ignoredPreflight() string {
	var b strings.Builder
	for _, c := range []string{"SystemVerification"} {
		fmt.Fprintf(&b, "    - %s\n", c)
	}
	return b.String()
}

// initConfig is node-1's InitConfiguration plus the cluster's. certKey,
// when not empty, is the key kubeadm init --upload-certs encrypts the
// control plane's certificates with (in the kubeadm-certs Secret), for
// kubeadm join --control-plane on the other control-plane nodes.
func initConfig(token string, endpoint netip.Addr, certKey string) string {
	var key string
	if certKey != "" {
		key = fmt.Sprintf("certificateKey: %q\n", certKey)
	}
	return fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
  - token: %s
    ttl: 24h0m0s
    usages: [signing, authentication]
    groups: ["system:bootstrappers:kubeadm:default-node-token"]
localAPIEndpoint:
  advertiseAddress: "%s"
  bindPort: 6443
%s%s---
%s`, token, NodeIP(1), key, nodeRegistration(1), clusterConfig(endpoint))
}

// joinConfig is node n's JoinConfiguration: it finds the API server at the
// control-plane endpoint with the bootstrap token and pins its CA by the
// hash of its public key. certKey, when not empty, makes node n a
// control-plane node (kubeadm join --control-plane): its API server
// advertises its own address, and it fetches the control plane's
// certificates from the kubeadm-certs Secret with the key.
func joinConfig(n int, endpoint netip.Addr, token, caHash, certKey string) string {
	var cp string
	if certKey != "" {
		cp = fmt.Sprintf(`controlPlane:
  localAPIEndpoint:
    advertiseAddress: "%s"
    bindPort: 6443
  certificateKey: %q
`, NodeIP(n), certKey)
	}
	return fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "%s:6443"
    token: %s
    caCertHashes: ["%s"]
%s%s`, endpoint, token, caHash, cp, nodeRegistration(n))
}

// newCertificateKey returns a key for kubeadm's --upload-certs as kubeadm
// init phase upload-certs and kubeadm certs certificate-key make one: 32
// random bytes (AES-256), hex.
func newCertificateKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("certificate key: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// kubeletPatch is the kubeadm patch of node n's KubeletConfiguration: its
// cgroup root, the machine's own cgroup.
func kubeletPatch(m *machine.Machine) string {
	return fmt.Sprintf("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupRoot: %s\n", m.Spec.Cgroup)
}

// newToken returns a kubeadm bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}.
func newToken() (string, error) {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 23)
	for i := range b {
		if i == 6 {
			b[i] = '.'
			continue
		}
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(chars))))
		if err != nil {
			return "", err
		}
		b[i] = chars[n.Int64()]
	}
	return string(b), nil
}

// caCertHash is kubeadm's "sha256:<hex>" pin of the cluster CA: the hash
// of its DER SubjectPublicKeyInfo.
func caCertHash(caPEM []byte) (string, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil {
		return "", fmt.Errorf("no PEM in the CA certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// writeKubeadmFiles writes a node's kubeadm configuration and kubelet
// patch into its /etc/kubeadm (kept on the host's disk).
func writeKubeadmFiles(m *machine.Machine, config string) error {
	dir := m.HostPath(kubeadmDir)
	if err := os.MkdirAll(filepath.Join(dir, "patches"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "patches", "kubeletconfiguration+merge.yaml"), []byte(kubeletPatch(m)), 0o644)
}

// kubeadm runs kubeadm on a node with the node's configuration, its
// output going to the node's /var/log/kubeadm-<verb>.log and the cluster's
// log.
func (c *Cluster) kubeadm(ctx context.Context, m *machine.Machine, args ...string) error {
	log, err := os.OpenFile(m.LogPath("kubeadm-"+args[0]), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := m.Command(ctx, nil, append([]string{"kubeadm"}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubeadm %s on %s: %w (%s)", args[0], m.Spec.Name, err, lastLines(m.LogPath("kubeadm-"+args[0]), 20))
	}
	return nil
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// phaseInit runs kubeadm init on node-1 and keeps its admin kubeconfig.
// With more than one control-plane node it uploads the control plane's
// certificates (--upload-certs) for the others to join with.
func (c *Cluster) phaseInit(ctx context.Context) error {
	token, err := newToken()
	if err != nil {
		return err
	}
	c.token = token
	if c.opts.ControlPlanes > 1 {
		if c.certKey, err = newCertificateKey(); err != nil {
			return err
		}
	}
	m := c.Nodes[0]
	if err := writeKubeadmFiles(m, initConfig(token, c.Endpoint(), c.certKey)); err != nil {
		return err
	}
	args := []string{"init", "--config", kubeadmDir + "/config.yaml"}
	if c.certKey != "" {
		args = append(args, "--upload-certs")
	}
	if c.opts.NoCoreDNS {
		args = append(args, "--skip-phases=addon/coredns")
	}
	if err := c.kubeadm(ctx, m, args...); err != nil {
		return err
	}
	admin, err := os.ReadFile(m.HostPath("/etc/kubernetes/admin.conf"))
	if err != nil {
		return err
	}
	return os.WriteFile(c.Kubeconfig, admin, 0o600)
}

// caHash is the pin of the cluster CA that kubeadm init made.
func (c *Cluster) caHash() (string, error) {
	ca, err := os.ReadFile(c.Nodes[0].HostPath("/etc/kubernetes/pki/ca.crt"))
	if err != nil {
		return "", err
	}
	return caCertHash(ca)
}

// phaseJoinControlPlane runs kubeadm join --control-plane on control-plane
// nodes 2 to ControlPlanes, one after the other (each adds an etcd member,
// and etcd admits one new member at a time), through the control-plane
// endpoint: the VIP.
func (c *Cluster) phaseJoinControlPlane(ctx context.Context) error {
	if c.opts.ControlPlanes < 2 {
		return nil
	}
	hash, err := c.caHash()
	if err != nil {
		return err
	}
	for i, m := range c.Nodes[1:c.opts.ControlPlanes] {
		t := time.Now()
		if err := writeKubeadmFiles(m, joinConfig(i+2, c.Endpoint(), c.token, hash, c.certKey)); err != nil {
			return err
		}
		if err := c.kubeadm(ctx, m, "join", "--config", kubeadmDir+"/config.yaml"); err != nil {
			return err
		}
		c.logf("%s joined the control plane in %s", m.Spec.Name, time.Since(t).Round(100*time.Millisecond))
	}
	return nil
}

// phaseJoin runs kubeadm join on every worker, at once.
func (c *Cluster) phaseJoin(ctx context.Context) error {
	workers := c.Nodes[c.opts.ControlPlanes:]
	if len(workers) == 0 {
		return nil
	}
	hash, err := c.caHash()
	if err != nil {
		return err
	}
	errs := make(chan error, len(workers))
	for i, m := range workers {
		n := c.opts.ControlPlanes + i + 1
		go func() {
			if err := writeKubeadmFiles(m, joinConfig(n, c.Endpoint(), c.token, hash, "")); err != nil {
				errs <- err
				return
			}
			errs <- c.kubeadm(ctx, m, "join", "--config", kubeadmDir+"/config.yaml")
		}()
	}
	var all []error
	for range workers {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}
