package rig

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
)

// StartEcho starts an echo server on EchoPort on every node of the layer-2
// rig that has none yet (it accepts the VIPs, routed locally on every
// node). The servers are closed with the LAN.
func (r *L2) StartEcho() error {
	v, _ := echoes.LoadOrStore(r, &echoState{servers: map[string]*netrig.EchoServer{}})
	st := v.(*echoState)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, n := range r.Nodes {
		if st.servers[n.Name] != nil {
			continue
		}
		s, err := n.Host.ServeEcho(EchoPort)
		if err != nil {
			return fmt.Errorf("echo server on %s: %w", n.Name, err)
		}
		st.servers[n.Name] = s
	}
	return nil
}

// L2RollingResult is what the client saw while every node's speaker
// restarted in turn.
type L2RollingResult struct {
	// Restarts counts the speakers restarted.
	Restarts int
	// FailedConnections counts the client's failed new connections (one
	// every 10 ms to each VIP), out of Attempts.
	FailedConnections, Attempts int
	// BrokenHolders counts the long-lived connections that broke, out of
	// Holders opened.
	BrokenHolders, Holders int
	// Breaks say when (since the first signal, and during which node's
	// restart) and why each long-lived connection broke.
	Breaks []string
	// Moves are the moves the CCM made meanwhile (every VIP of the rig,
	// not only the probed ones).
	Moves Moves
	// ClientMoves lists the probed VIPs whose answering node changed, as
	// "vip: node-a → node-b".
	ClientMoves []string
	// PerNode is, for each node in name order, the time from the SIGTERM
	// to the new speaker taken over by the CCM with every probed VIP
	// announced by exactly one speaker.
	PerNode []time.Duration
}

// VIPsMoved is how many VIP moves the restarts caused: the CCM's count,
// or the client's if it saw more (a VIP answered by two nodes in turn
// without the CCM moving it).
func (res L2RollingResult) VIPsMoved() int {
	return max(int(res.Moves.Total), len(res.ClientMoves))
}

// RollingRestart restarts every node's speaker in name order the way
// `kubectl rollout restart` of the DaemonSet with maxUnavailable 1 does:
// SIGTERM, wait for the process to exit, start a new one with the same
// flags, wait until the CCM took it over and every probed VIP is announced
// by one speaker, next node. Meanwhile the client opens a connection to
// each of vips every 10 ms and holds holders long-lived connections to
// each (echo every 50 ms, 1 s timeout). gap is how long no speaker runs on
// the node between the old process's exit and the new one's start (the
// kubelet starting the new pod takes about a second).
func (r *L2) RollingRestart(ctx context.Context, vips []netip.Addr, holders int, gap time.Duration) (L2RollingResult, error) {
	var res L2RollingResult
	if err := r.StartEcho(); err != nil {
		return res, err
	}
	for _, vip := range vips {
		if _, err := r.WaitReachable(ctx, vip, 10*time.Second); err != nil {
			return res, fmt.Errorf("before the restarts: %w", err)
		}
	}
	if err := r.waitOneAnnouncer(ctx, vips, 20*time.Second); err != nil {
		return res, fmt.Errorf("before the restarts: %w", err)
	}
	mark, err := r.MarkMoves(ctx)
	if err != nil {
		return res, err
	}
	probes := make([]*netrig.Probe, len(vips))
	hs := make([]*netrig.Holders, len(vips))
	for i, vip := range vips {
		probes[i] = r.Client.StartProbe(netip.AddrPortFrom(vip, ServicePort), ProbeInterval, ProbeTimeout)
		hs[i] = r.Client.StartHolders(netip.AddrPortFrom(vip, EchoPort), holders, 50*time.Millisecond, time.Second)
	}
	defer func() {
		for i := range vips {
			probes[i].Stop()
			hs[i].Stop()
		}
	}()
	for i, vip := range vips {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := hs[i].Ready(rctx)
		cancel()
		if err != nil {
			return res, fmt.Errorf("holders to %s: %w", vip, err)
		}
	}

	type phase struct {
		node string
		at   time.Time
	}
	var phases []phase
	// finish fills in what the client saw, also after an error.
	finish := func() error {
		for i, vip := range vips {
			rs := probes[i].Stop()
			st := hs[i].Stop()
			res.Attempts += len(rs)
			res.FailedConnections += len(netrig.Failures(rs))
			res.Holders += st.Opened
			res.BrokenHolders += st.Broken
			for _, br := range st.Breaks {
				during, since := "before the first restart", time.Duration(0)
				for _, p := range phases {
					if !br.At.Before(p.at) {
						during, since = "during "+p.node, br.At.Sub(phases[0].at)
					}
				}
				res.Breaks = append(res.Breaks, fmt.Sprintf("+%s (%s) %s: %s", since.Round(time.Millisecond), during, vip, br.Err))
			}
			last := ""
			for _, x := range rs {
				if !x.OK {
					continue
				}
				if last != "" && x.Node != last {
					res.ClientMoves = append(res.ClientMoves, fmt.Sprintf("%s: %s → %s", vip, last, x.Node))
				}
				last = x.Node
			}
		}
		var err error
		res.Moves, err = r.MovesSince(ctx, mark)
		return err
	}
	nodes := slices.Clone(r.Nodes)
	slices.SortFunc(nodes, func(x, y *L2Node) int { return strings.Compare(x.Name, y.Name) })
	for _, n := range nodes {
		at := time.Now()
		phases = append(phases, phase{n.Name, at})
		if err := r.restartSpeaker(ctx, n, gap); err != nil {
			return res, errors.Join(fmt.Errorf("rolling restart: %w", err), finish())
		}
		res.Restarts++
		if err := r.waitOneAnnouncer(ctx, vips, 20*time.Second); err != nil {
			return res, errors.Join(fmt.Errorf("after restarting %s's speaker: %w", n.Name, err), finish())
		}
		res.PerNode = append(res.PerNode, time.Since(at))
	}
	// Connections in flight through the last restart settle.
	time.Sleep(500 * time.Millisecond)
	return res, finish()
}

// restartSpeaker stops n's speaker with SIGTERM, as the kubelet does when
// a DaemonSet rollout replaces its pod, and starts a new one with the same
// flags gap after it exited; it returns when the CCM took the new one
// over.
func (r *L2) restartSpeaker(ctx context.Context, n *L2Node, gap time.Duration) error {
	if err := r.StopSpeaker(n); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(gap):
	}
	return r.StartNewSpeaker(ctx, n)
}

// StopSpeaker sends SIGTERM to n's speaker and waits (10 s at most) for it
// to exit.
func (r *L2) StopSpeaker(n *L2Node) error {
	if err := n.Speaker.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signalling %s's speaker: %w", n.Name, err)
	}
	if err := n.Speaker.Wait(10 * time.Second); err != nil {
		return fmt.Errorf("%s's speaker after SIGTERM: %w", n.Name, err)
	}
	return nil
}

// StartNewSpeaker starts a new speaker process on n (same flags, a new log
// file) after the old one exited, and waits until the CCM took it over.
func (r *L2) StartNewSpeaker(ctx context.Context, n *L2Node) error {
	n.restarts++
	if err := r.startSpeaker(ctx, n, fmt.Sprintf("speaker-%s-%d", n.Name, n.restarts)); err != nil {
		return fmt.Errorf("starting %s's new speaker: %w", n.Name, err)
	}
	if err := n.Speaker.WaitForLog(tookOver, 20*time.Second); err != nil {
		return fmt.Errorf("%s's new speaker: %w", n.Name, err)
	}
	return nil
}

// Announcers asks every speaker which of vips it answers for and returns
// the nodes per VIP (a speaker that does not answer is skipped).
func (r *L2) Announcers(ctx context.Context, vips []netip.Addr) map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, n := range r.Nodes {
		if n.Speaker == nil || n.Speaker.Exited() {
			continue
		}
		ann, err := r.Announcing(ctx, n)
		if err != nil {
			continue
		}
		for _, vip := range vips {
			if slices.Contains(ann, vip.String()) {
				out[vip] = append(out[vip], n.Name)
			}
		}
	}
	return out
}

// waitOneAnnouncer waits until every one of vips is announced by exactly
// one speaker.
func (r *L2) waitOneAnnouncer(ctx context.Context, vips []netip.Addr, timeout time.Duration) error {
	return Eventually(timeout, func() error {
		ann := r.Announcers(ctx, vips)
		for _, vip := range vips {
			if len(ann[vip]) != 1 {
				return fmt.Errorf("%s is announced by %v, want one node", vip, ann[vip])
			}
		}
		return nil
	})
}

// SpreadVIPs returns one VIP per node (in node order): it calls create(i)
// for i = 0, 1, ... (create makes a Service and returns its address) until
// every node announces one of them or limit were made.
func (r *L2) SpreadVIPs(ctx context.Context, limit int, create func(i int) (netip.Addr, error)) ([]netip.Addr, error) {
	byNode := map[string]netip.Addr{}
	for i := 0; i < limit && len(byNode) < len(r.Nodes); i++ {
		vip, err := create(i)
		if err != nil {
			return nil, err
		}
		if err := r.waitOneAnnouncer(ctx, []netip.Addr{vip}, 20*time.Second); err != nil {
			return nil, err
		}
		node := r.Announcers(ctx, []netip.Addr{vip})[vip][0]
		if _, ok := byNode[node]; !ok {
			byNode[node] = vip
		}
	}
	var out []netip.Addr
	for _, n := range r.Nodes {
		if vip, ok := byNode[n.Name]; ok {
			out = append(out, vip)
		}
	}
	if len(out) < len(r.Nodes) {
		return out, fmt.Errorf("%d Services' VIPs are on %d of %d nodes", limit, len(out), len(r.Nodes))
	}
	return out, nil
}
