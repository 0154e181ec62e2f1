package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/test/cluster/machine"
	"github.com/ironlb/ironlb/test/netrig"
)

// Disruption is what a failover trial does to the control-plane node that
// holds the VIP.
type Disruption string

// The disruptions of MeasureFailover.
const (
	// APIServerStop stops the holder's kube-apiserver: its static pod's
	// manifest is moved out of /etc/kubernetes/manifests (the kubelet
	// stops the pod), then back.
	APIServerStop Disruption = "apiserver-stop"
	// NodeLoss cuts the holder's link to the LAN (the switch side of its
	// cable), then restores it.
	NodeLoss Disruption = "node-loss"
	// NodeRestart restarts the holder's machine (see RestartNode).
	NodeRestart Disruption = "node-restart"
)

// Probing of MeasureFailover: a new connection every 20 ms, 300 ms for
// each GET /readyz.
const (
	probeInterval = 20 * time.Millisecond
	probeTimeout  = 300 * time.Millisecond
)

// Failover is one measured failover of the control-plane VIP.
type Failover struct {
	Disruption Disruption
	// From held the VIP before the disruption, To after it.
	From, To string
	// Outage is from the first GET https://<VIP>:6443/readyz from the
	// outside client that failed after the disruption to the first that
	// succeeded after it.
	Outage time.Duration
	// FailedProbes counts the failed attempts from the disruption to the
	// recovery.
	FailedProbes int
	// Rejoin is how long From took, once restored, to be back: its API
	// server ready and its speaker following the holder.
	Rejoin time.Duration
	// MovesOnRejoin counts the VIP's moves (epochs) while From rejoined;
	// the design wants none.
	MovesOnRejoin uint64
	// RejoinFailures counts the failed attempts from the restore until
	// the rejoin; RejoinFailure is the first one's error.
	RejoinFailures int
	RejoinFailure  string
	// MoveLog are the control-plane speakers' log lines about the VIP and
	// their API servers' readiness from the restore on, when the VIP
	// moved during the rejoin: why it moved.
	MoveLog []string
}

func (f Failover) String() string {
	s := fmt.Sprintf("%s: %s → %s, outage %s (%d failed probes), %s back in %s, %d moves on its rejoin (%d failed probes meanwhile)",
		f.Disruption, f.From, f.To, f.Outage.Round(time.Millisecond), f.FailedProbes, f.From, f.Rejoin.Round(100*time.Millisecond), f.MovesOnRejoin, f.RejoinFailures)
	if f.RejoinFailures > 0 {
		s += ", the first: " + f.RejoinFailure
	}
	return s
}

// MeasureFailover disrupts the node that holds the control-plane VIP and
// measures, from the outside client through the VIP, how long the API
// server is unreachable; it confirms the recovery with kubectl get --raw
// /readyz (the admin kubeconfig's server is the VIP), restores the node
// and counts the VIP's moves until it is back. It fails if the VIP did
// not move, or if the speakers do not settle on one holder.
func (c *Cluster) MeasureFailover(ctx context.Context, d Disruption) (f Failover, err error) {
	if c.Endpoint() != ControlPlaneVIP || len(c.ControlPlaneNodes()) < 2 {
		return f, errors.New("failover: the cluster has no control-plane VIP with two or more control-plane nodes")
	}
	f.Disruption = d
	var epoch uint64
	if f.From, epoch, err = c.WaitHolder(ctx, 5*time.Minute); err != nil {
		return f, fmt.Errorf("before the %s: %w", d, err)
	}
	probe, err := c.StartReadyzProbe(ControlPlaneVIP, probeInterval, probeTimeout)
	if err != nil {
		return f, err
	}
	defer probe.Stop()
	if err := poll(ctx, 30*time.Second, func() error {
		if _, ok := lastOK(probe.Results()); !ok {
			return fmt.Errorf("no GET /readyz through %s succeeded", ControlPlaneVIP)
		}
		return nil
	}); err != nil {
		return f, err
	}

	t0 := time.Now()
	switch d {
	case APIServerStop:
		err = c.StopAPIServer(f.From)
	case NodeLoss:
		err = c.SetNodeLink(f.From, false)
	case NodeRestart:
		err = c.ShutdownNode(ctx, f.From)
	default:
		err = fmt.Errorf("unknown disruption %q", d)
	}
	if err != nil {
		return f, err
	}
	if err := poll(ctx, 2*time.Minute, func() error {
		if !recovered(probe.Results(), t0) {
			return fmt.Errorf("GET /readyz through %s has not failed and recovered since the %s", ControlPlaneVIP, d)
		}
		return nil
	}); err != nil {
		return f, err
	}
	rs := probe.Results()
	f.Outage = netrig.Outage(rs, t0)
	for _, r := range rs {
		if !r.OK && !r.At.Before(t0) {
			f.FailedProbes++
		}
		if r.OK && f.FailedProbes > 0 {
			break // the recovery
		}
	}
	if f.To, epoch, err = c.WaitHolder(ctx, time.Minute, f.From); err != nil {
		return f, fmt.Errorf("after the %s of %s: %w", d, f.From, err)
	}
	if f.To == f.From {
		return f, fmt.Errorf("after the %s of %s, it still holds the VIP", d, f.From)
	}
	out, err := c.Kubectl(ctx, nil, "get", "--raw", "/readyz")
	if err != nil || strings.TrimSpace(out) != "ok" {
		return f, fmt.Errorf("kubectl get --raw /readyz through the VIP after the %s: %q, %v", d, out, err)
	}

	tRestore := time.Now()
	switch d {
	case APIServerStop:
		err = c.StartAPIServer(f.From)
	case NodeLoss:
		err = c.SetNodeLink(f.From, true)
	case NodeRestart:
		err = c.BootNode(f.From)
	}
	if err != nil {
		return f, err
	}
	final, epoch2, err := c.WaitHolder(ctx, 5*time.Minute)
	if err != nil {
		return f, fmt.Errorf("%s back after the %s: %w", f.From, d, err)
	}
	f.Rejoin = time.Since(tRestore)
	f.MovesOnRejoin = epoch2 - epoch
	if final != f.To && f.MovesOnRejoin == 0 {
		f.MovesOnRejoin = 1
	}
	if f.MovesOnRejoin > 0 {
		f.MoveLog = c.speakerLog(tRestore)
	}
	for _, r := range probe.Stop() {
		if !r.OK && !r.At.Before(tRestore) {
			if f.RejoinFailures == 0 && r.Err != nil {
				f.RejoinFailure = r.Err.Error()
			}
			f.RejoinFailures++
		}
	}
	return f, nil
}

// nodeIndex is the index in Nodes of the node named name.
func (c *Cluster) nodeIndex(name string) (int, error) {
	for i, m := range c.Nodes {
		if m.Spec.Name == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no node %q (nodes: %s)", name, strings.Join(c.NodeNames(), ", "))
}

// The kube-apiserver's static pod, and where StopAPIServer keeps it.
const (
	apiserverManifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"
	apiserverStopped  = "/etc/kubernetes/kube-apiserver.yaml.stopped"
)

// StopAPIServer stops the kube-apiserver of a control-plane node as an
// administrator would: its static pod's manifest moves out of
// /etc/kubernetes/manifests, and the kubelet stops the pod.
func (c *Cluster) StopAPIServer(node string) error {
	i, err := c.nodeIndex(node)
	if err != nil {
		return err
	}
	m := c.Nodes[i]
	if err := os.Rename(m.HostPath(apiserverManifest), m.HostPath(apiserverStopped)); err != nil {
		return fmt.Errorf("stopping the API server of %s: %w", node, err)
	}
	return nil
}

// StartAPIServer puts back what StopAPIServer moved.
func (c *Cluster) StartAPIServer(node string) error {
	i, err := c.nodeIndex(node)
	if err != nil {
		return err
	}
	m := c.Nodes[i]
	if err := os.Rename(m.HostPath(apiserverStopped), m.HostPath(apiserverManifest)); err != nil {
		return fmt.Errorf("starting the API server of %s again: %w", node, err)
	}
	return nil
}

// SetNodeLink takes a node's link to the LAN down or up at the switch
// (netrig.Host.SetLink): down, the node vanishes from the LAN without a
// word, as when its cable is pulled. Only for a cluster this process made
// (Up), not one it attached to.
func (c *Cluster) SetNodeLink(node string, up bool) error {
	i, err := c.nodeIndex(node)
	if err != nil {
		return err
	}
	if c.net == nil || len(c.net.nodes) <= i || c.net.nodes[i].LAN() == nil {
		return errors.New("the node's links belong to the process that made the cluster")
	}
	return c.net.nodes[i].SetLink(up)
}

// RestartNode restarts a node's machine: ShutdownNode, then BootNode.
func (c *Cluster) RestartNode(ctx context.Context, node string) error {
	if err := c.ShutdownNode(ctx, node); err != nil {
		return err
	}
	return c.BootNode(node)
}

// ShutdownNode shuts a node's machine down as systemd's reboot does:
// SIGTERM to every process of the machine at once (the kubelet,
// containerd and every container: the API server, etcd, the speakers),
// up to shutdownGrace for them to exit, then the machine stops and
// whatever is left is killed. What a reboot would not keep is gone: the
// machine's /run and /tmp, and (as a fresh kernel has none) the
// control-plane VIP on its lo if a killed speaker left it there. What is
// on its disk stays: /etc/kubernetes, /var/lib/etcd, /var/lib/kubelet,
// containerd's images. BootNode starts it again.
func (c *Cluster) ShutdownNode(ctx context.Context, node string) error {
	i, err := c.nodeIndex(node)
	if err != nil {
		return err
	}
	m := c.Nodes[i]
	// The init stays frozen meanwhile, so that it restarts no service;
	// SIGSTOP reaches a PID namespace's init from outside it.
	if err := unix.Kill(m.Pid, unix.SIGSTOP); err != nil {
		return fmt.Errorf("shutting %s down: %w", node, err)
	}
	// The shell's kill: procps' kill -1 exits 1 even when kill(2)
	// succeeded.
	if _, err := m.Run(ctx, "sh", "-c", "kill -TERM -1"); err != nil {
		_ = unix.Kill(m.Pid, unix.SIGCONT)
		return fmt.Errorf("shutting %s down: %w", node, err)
	}
	// Wait until only the init (and zombies it has not reaped yet) is
	// left, or the grace period ends.
	deadline := time.Now().Add(shutdownGrace)
	for time.Now().Before(deadline) {
		out, _ := m.Command(ctx, nil, "pgrep", "-c", "-r", "RSDT", ".").Output()
		if strings.TrimSpace(string(out)) == "1" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := unix.Kill(m.Pid, unix.SIGCONT); err != nil {
		return fmt.Errorf("shutting %s down: %w", node, err)
	}
	if err := m.Stop(0); err != nil {
		return err
	}
	if c.net != nil && len(c.net.nodes) > i {
		h := c.net.nodes[i]
		if out, err := h.Run("ip", "-o", "addr", "show", "dev", "lo"); err == nil && strings.Contains(out, " "+ControlPlaneVIP.String()+"/") {
			if _, err := h.Run("ip", "addr", "del", ControlPlaneVIP.String()+"/32", "dev", "lo"); err != nil {
				return err
			}
		}
	}
	return nil
}

// shutdownGrace is how long ShutdownNode waits for the machine's
// processes to exit after SIGTERM.
const shutdownGrace = 15 * time.Second

// BootNode starts a node's machine again after ShutdownNode: its init
// starts containerd and the kubelet, which starts the static pods from
// /etc/kubernetes/manifests.
func (c *Cluster) BootNode(node string) error {
	i, err := c.nodeIndex(node)
	if err != nil {
		return err
	}
	old := c.Nodes[i]
	if old.Running() {
		return fmt.Errorf("booting %s: it runs", node)
	}
	// The same folder: Attach finds the new init by its pid file.
	m, err := machine.Start(old.Spec)
	if err != nil {
		return err
	}
	c.Nodes[i] = m
	return nil
}

// speakerLog returns the control-plane speakers' log lines since since
// that are about the VIP or the local API server's readiness, each
// prefixed with its node, from the containers' logs in the nodes'
// /var/log/pods (CRI format: "<RFC 3339 time> <stream> <tag> <line>").
func (c *Cluster) speakerLog(since time.Time) []string {
	var out []string
	for _, m := range c.ControlPlaneNodes() {
		files, _ := filepath.Glob(m.HostPath("/var/log/pods/kube-system_ironlb-control-plane-*/speaker/*.log"))
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				out = append(out, fmt.Sprintf("%s: %v", m.Spec.Name, err))
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				ts, rest, ok := strings.Cut(line, " ")
				at, err := time.Parse(time.RFC3339Nano, ts)
				if !ok || err != nil || at.Before(since) {
					continue
				}
				if strings.Contains(rest, "control-plane VIP") || strings.Contains(rest, "readiness changed") {
					out = append(out, m.Spec.Name+" "+line)
				}
			}
		}
	}
	return out
}
