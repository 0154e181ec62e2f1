package rig

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/standin"
)

// The control-plane BGP rig: three control-plane nodes on the LAN, each
// with a stand-in kube-apiserver on :6443 and the real
// "ironlb-speaker control-plane --mode bgp" at its shipped defaults; FRR
// on the router (dynamic neighbors, BFD at FRR's defaults, ECMP) and a
// client behind it. No Kubernetes API: the control-plane speaker needs
// none.
var (
	// ControlPlaneVIP is the rig's control-plane VIP.
	ControlPlaneVIP = netip.MustParseAddr("192.0.2.250")
	cpVIPPrefix     = netip.PrefixFrom(ControlPlaneVIP, 32)
)

// CPBGPNode is one control-plane node of the rig.
type CPBGPNode struct {
	Name      string
	Host      *netrig.Host
	IP        netip.Addr
	APIServer *standin.APIServer
	Speaker   *procs.Process
	restarts  int
}

// CPBGP is the control-plane BGP rig.
type CPBGP struct {
	LAN     *netrig.LAN
	Router  *frr.Router
	Outside *netrig.Host
	CA      *standin.CA
	Nodes   []*CPBGPNode
	LogDir  string
	// SpeakerArgs are extra control-plane speaker flags.
	SpeakerArgs []string
}

// StartCPBGP builds the rig on lan and upstream with logs in logDir and
// waits until the router routes the VIP via every node.
func StartCPBGP(ctx context.Context, lan, upstream *netrig.LAN, logDir string, speakerArgs ...string) (r *CPBGP, err error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	r = &CPBGP{LAN: lan, LogDir: logDir, SpeakerArgs: speakerArgs}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	rh, err := lan.AddHost("router", RouterV4, RouterV6)
	if err != nil {
		return r, err
	}
	if err := rh.AttachTo(upstream, "eth1", outsideRtrV4, outsideRtrV6); err != nil {
		return r, err
	}
	if r.Outside, err = upstream.AddHost("outside", outsideCliV4, outsideCliV6); err != nil {
		return r, err
	}
	if err := r.Outside.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), outsideRtrV4.Addr()); err != nil {
		return r, err
	}
	// BFD with every node at FRR's default timers (300 ms × 3).
	if r.Router, err = frr.Start(rh, routerConfig(" neighbor nodes bfd\n")); err != nil {
		return r, err
	}
	if r.CA, err = standin.NewCA(logDir); err != nil {
		return r, err
	}
	for i := range 3 {
		name := fmt.Sprintf("cp-%c", 'a'+i)
		ip := pfx(LANv4, 11+i)
		h, err := lan.AddHost(fmt.Sprintf("cp%c", 'a'+i), ip)
		if err != nil {
			return r, err
		}
		if err := h.AddRoute(OutsideV4, RouterV4.Addr()); err != nil {
			return r, err
		}
		n := &CPBGPNode{Name: name, Host: h, IP: ip.Addr()}
		r.Nodes = append(r.Nodes, n)
		if n.APIServer, err = standin.Start(h, name, r.CA); err != nil {
			return r, err
		}
		if err := r.StartSpeaker(n); err != nil {
			return r, err
		}
	}
	if _, err := r.WaitNextHops(r.Hops(), 60*time.Second); err != nil {
		return r, err
	}
	return r, r.WaitBFDUp(30 * time.Second)
}

// StartSpeaker starts the node's control-plane speaker (again).
func (r *CPBGP) StartSpeaker(n *CPBGPNode) error {
	dir, err := binaries.IronLB()
	if err != nil {
		return err
	}
	name := "cp-speaker-" + n.Name
	if n.restarts > 0 {
		name += "-" + strconv.Itoa(n.restarts)
	}
	n.restarts++
	args := append([]string{"control-plane", "--mode=bgp", "--vip=" + ControlPlaneVIP.String(), "--node-name=" + n.Name,
		"--apiserver-ca-file=" + r.CA.File,
		"--bgp-peer=" + RouterV4.Addr().String(), "--bgp-peer-asn=" + strconv.Itoa(int(RouterASN)), "--bgp-asn=" + strconv.Itoa(int(NodeASN)),
	}, r.SpeakerArgs...)
	p, err := procs.Start(name, filepath.Join(r.LogDir, name+".log"), filepath.Join(dir, "ironlb-speaker"), args,
		procs.Options{Wrap: []string{"ip", "netns", "exec", n.Host.Name}})
	if err != nil {
		return err
	}
	n.Speaker = p
	return nil
}

// Stop stops the speakers, the stand-ins and the router; the LANs' Close
// removes the namespaces.
func (r *CPBGP) Stop() {
	for _, n := range r.Nodes {
		if n.Speaker != nil {
			_ = n.Speaker.Stop(5 * time.Second)
		}
		if n.APIServer != nil {
			_ = n.APIServer.Close()
		}
	}
	if r.Router != nil {
		_ = r.Router.Close()
	}
}

// Hops are the next hops of the VIP when every node advertises it, less
// the nodes named in except.
func (r *CPBGP) Hops(except ...string) []string {
	var hops []string
	for _, n := range r.Nodes {
		if !slices.Contains(except, n.Name) {
			hops = append(hops, n.IP.String())
		}
	}
	return hops
}

// Node returns the node called name.
func (r *CPBGP) Node(name string) *CPBGPNode {
	for _, n := range r.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// WaitNextHops waits until the router's kernel routes the VIP via exactly
// want (none: no route), polling every 5 ms, and returns how long that
// took.
func (r *CPBGP) WaitNextHops(want []string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	want = slices.Clone(want)
	slices.Sort(want)
	for {
		hops, err := r.Router.KernelNextHops(cpVIPPrefix)
		if err == nil && slices.Equal(hops, want) {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("after %s: the router's kernel routes %s via %v (%v), want %v", timeout, cpVIPPrefix, hops, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// RestartAPIServer starts the node's stand-in again after a Shutdown or
// Close.
func (r *CPBGP) RestartAPIServer(n *CPBGPNode) error {
	<-n.APIServer.Closed()
	a, err := standin.Start(n.Host, n.Name, r.CA)
	if err != nil {
		return err
	}
	n.APIServer = a
	return nil
}
