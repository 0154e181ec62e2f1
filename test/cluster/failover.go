package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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
	// The VIP moves, and GET /readyz through it works after the move:
	// it failed and recovered, or, when the holder handed the VIP over as
	// it shut down, it never failed (outage 0).
	if f.To, epoch, err = c.WaitHolder(ctx, time.Minute, f.From); err != nil {
		return f, fmt.Errorf("after the %s of %s: %w", d, f.From, err)
	}
	moved := time.Now()
	if err := poll(ctx, 2*time.Minute, func() error {
		rs := probe.Results()
		if recovered(rs, t0) || netrig.Outage(rs, t0) == 0 && okSince(rs, moved) {
			return nil
		}
		return fmt.Errorf("GET /readyz through %s has not worked again since the %s moved the VIP to %s", ControlPlaneVIP, d, f.To)
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
