package rig

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
)

// Reach opens one TCP connection from the client to vip and returns the
// name of the node that answered.
func (r *L2) Reach(ctx context.Context, vip netip.Addr, timeout time.Duration) (string, error) {
	return reach(ctx, r.Client, vip, timeout)
}

// reach connects from h to vip's service port and returns the answering
// node's name.
func reach(ctx context.Context, h *netrig.Host, vip netip.Addr, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", netip.AddrPortFrom(vip, ServicePort).String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading from %s: %w", vip, err)
	}
	return strings.TrimSpace(line), nil
}

// WaitReachable retries Reach until it works or timeout passes.
func (r *L2) WaitReachable(ctx context.Context, vip netip.Addr, timeout time.Duration) (string, error) {
	var node string
	err := Eventually(timeout, func() error {
		var err error
		node, err = r.Reach(ctx, vip, 300*time.Millisecond)
		return err
	})
	return node, err
}

// Announcer returns the node whose MAC the client's neighbor table holds
// for vip.
func (r *L2) Announcer(vip netip.Addr) (*L2Node, error) {
	neigh, err := r.Client.Neighbors()
	if err != nil {
		return nil, err
	}
	mac, ok := neigh[vip]
	if !ok {
		return nil, fmt.Errorf("the client has no neighbor entry for %s", vip)
	}
	n := r.NodeByMAC(mac)
	if n == nil {
		return nil, fmt.Errorf("the client resolved %s to %s, which is no node's MAC", vip, mac)
	}
	return n, nil
}

// FailureMode is how the announcing node fails in a failover.
type FailureMode int

const (
	// Crash kills the speaker with SIGKILL and stops the node's responder,
	// as when the node's processes die: the CCM sees the stream break.
	Crash FailureMode = iota
	// Silent takes the node's link down: nothing tells the CCM, only
	// missed heartbeats reveal it.
	Silent
)

func (m FailureMode) String() string {
	if m == Crash {
		return "crash"
	}
	return "silent"
}

// Failover is one measured failover.
type Failover struct {
	From, To string
	// Outage is how long the client was cut off: from the failure to the
	// start of its first connection answered by another node. (Counting
	// from the client's first failed attempt instead would miss failovers
	// quicker than the 10 ms between attempts.)
	Outage time.Duration
	// Failed counts the client's failed attempts in between.
	Failed int
}

// ProbeInterval and ProbeTimeout are the client's connection attempts
// during a failover: a new TCP connection every 10 ms.
const (
	ProbeInterval = 10 * time.Millisecond
	ProbeTimeout  = 300 * time.Millisecond
)

// MeasureFailover fails the node announcing vip and measures how long the
// client, connecting every 10 ms, is cut off. It then repairs the node
// (link up, speaker restarted) and waits until the CCM has it back, so the
// next trial starts from a whole cluster.
func (r *L2) MeasureFailover(ctx context.Context, vip netip.Addr, mode FailureMode) (Failover, error) {
	from, err := r.WaitReachable(ctx, vip, 10*time.Second)
	if err != nil {
		return Failover{}, fmt.Errorf("before the failure: %w", err)
	}
	owner := r.Node(from)
	if owner == nil {
		return Failover{}, fmt.Errorf("VIP %s answered by unknown node %q", vip, from)
	}
	probe := r.Client.StartProbe(netip.AddrPortFrom(vip, ServicePort), ProbeInterval, ProbeTimeout)
	time.Sleep(200 * time.Millisecond)
	failedAt := time.Now()
	switch mode {
	case Crash:
		owner.Responder.SetServing(false)
		if err := owner.Speaker.Signal(syscall.SIGKILL); err != nil {
			probe.Stop()
			return Failover{}, err
		}
	case Silent:
		if err := owner.Host.SetLink(false); err != nil {
			probe.Stop()
			return Failover{}, err
		}
	}
	var to netrig.ProbeResult
	err = Eventually(15*time.Second, func() error {
		var ok bool
		if to, ok = netrig.FirstFrom(probe.Results(), failedAt, from); !ok {
			return fmt.Errorf("the client still gets no answer from another node than %s", from)
		}
		return nil
	})
	time.Sleep(50 * time.Millisecond)
	rs := probe.Stop()
	res := Failover{From: from, To: to.Node, Outage: max(0, to.At.Sub(failedAt))}
	for _, x := range rs {
		if !x.OK && x.At.Before(to.At) && x.At.Add(ProbeTimeout).After(failedAt) {
			res.Failed++
		}
	}
	if rerr := r.repair(ctx, owner, mode); rerr != nil {
		return res, errors.Join(err, fmt.Errorf("repairing %s: %w", owner.Name, rerr))
	}
	if err != nil {
		return res, fmt.Errorf("%s of %s: %w", mode, from, err)
	}
	return res, nil
}

// repair undoes a failure and waits until the node's speaker has a stream
// from the CCM again.
func (r *L2) repair(ctx context.Context, n *L2Node, mode FailureMode) error {
	switch mode {
	case Crash:
		n.Responder.SetServing(true)
		_ = n.Speaker.Wait(5 * time.Second)
		n.restarts++
		if err := r.startSpeaker(ctx, n, fmt.Sprintf("speaker-%s-%d", n.Name, n.restarts)); err != nil {
			return err
		}
		return n.Speaker.WaitForLog(tookOver, 20*time.Second)
	default:
		before := strings.Count(n.Speaker.Log(), tookOver)
		if err := n.Host.SetLink(true); err != nil {
			return err
		}
		return Eventually(20*time.Second, func() error {
			if strings.Count(n.Speaker.Log(), tookOver) > before {
				return nil
			}
			return fmt.Errorf("speaker on %s not reconnected by the CCM", n.Name)
		})
	}
}

// tookOver is what a speaker logs when a CCM stream's snapshot arrives.
const tookOver = "CCM took over the speaker"

// StartSpeaker starts (or restarts) the node's ironlb-speaker.
func (r *L2) StartSpeaker(ctx context.Context, n *L2Node) error {
	return r.startSpeaker(ctx, n, "speaker-"+n.Name)
}

func (r *L2) startSpeaker(ctx context.Context, n *L2Node, name string) error {
	dir, err := binaries.IronLB()
	if err != nil {
		return err
	}
	if n.TLSDir == "" {
		n.TLSDir = filepath.Join(r.LogDir, n.Name+"-tls")
		if err := r.speakerCredentials(ctx, n, n.TLSDir); err != nil {
			return err
		}
	}
	p, err := procs.Start(name, filepath.Join(r.LogDir, name+".log"), filepath.Join(dir, "ironlb-speaker"),
		append([]string{"--node-name=" + n.Name, "--node-ip=" + n.IPv4.String(), "--ca-file=" + filepath.Join(n.TLSDir, "ca.crt"), "--token-file=" + filepath.Join(n.TLSDir, "token"),
			"--health-address=" + net.JoinHostPort(n.IPv4.String(), "7474"), "--debug-endpoints"}, r.opts.SpeakerArgs...),
		procs.Options{Wrap: r.speakerWrap(n)})
	if err != nil {
		return err
	}
	n.Speaker = p
	return p.WaitForLog("Speaker started", 20*time.Second)
}

// speakerWrap runs a speaker in n's namespace, with only
// SpeakerCapabilities when they are set.
func (r *L2) speakerWrap(n *L2Node) []string {
	w := []string{"ip", "netns", "exec", n.Host.Name}
	if c := r.opts.SpeakerCapabilities; c != "" {
		w = append(w, "setpriv", "--bounding-set=-all,+"+strings.ReplaceAll(c, ",", ",+"), "--inh-caps=-all", "--")
	}
	return w
}

// Announcing asks the node's speaker (its /announcements endpoint, from
// the client's namespace) which VIPs it answers for. The rig's speakers run
// with --debug-endpoints for it and for /bgp; shipped ones do not.
func (r *L2) Announcing(ctx context.Context, n *L2Node) ([]string, error) {
	body, err := r.SpeakerGet(ctx, n, "/announcements")
	if err != nil {
		return nil, err
	}
	var out []string
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return nil, fmt.Errorf("decoding %s's announcements: %w", n.Name, err)
	}
	return out, nil
}
