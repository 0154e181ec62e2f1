package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/test/cluster/machine"
)

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
