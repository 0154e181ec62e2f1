package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/component-base/cli/flag"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/internal/version"
)

// controlPlaneCommand is the subcommand that serves the kube-apiserver's
// own VIP: ironlb-speaker control-plane [flags].
const controlPlaneCommand = "control-plane"

type cpOptions struct {
	vip, mode, ifc, node          string
	readyzURL, caFile, serverName string
	keyFiles, peers               []string
	port, healthPort              int
	bgp                           cpvip.BGPConfig
}

// cpSpeaker is a control-plane speaker of either mode.
type cpSpeaker interface {
	Run(ctx context.Context) error
	ListenAndServe(ctx context.Context, addr string) error
}

// controlPlaneMain runs the control-plane subcommand and returns the exit
// code.
func controlPlaneMain(args []string) int {
	var o cpOptions
	logCfg := logsapi.NewLoggingConfiguration()
	fs := controlPlaneFlags(&o, logCfg)
	gate := featuregate.NewFeatureGate()
	if err := logsapi.AddFeatureGates(gate); err != nil {
		panic(err)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "ironlb-speaker control-plane:", err)
		return 2
	}
	if err := logsapi.ValidateAndApply(logCfg, gate); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-speaker control-plane:", err)
		return 2
	}
	log := klog.Background().WithName("control-plane").WithValues("node", o.node)
	var s cpSpeaker
	var health string
	if o.mode == "bgp" {
		cfg, h, err := o.bgpConfig()
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlb-speaker control-plane:", err)
			return 2
		}
		health = h
		log.Info("Control-plane speaker starting", "version", version.Version, "mode", o.mode, "vip", cfg.VIP, "nodeIP", cfg.NodeIP, "peers", cfg.BGP.Peers, "bfd", cfg.BGP.BFD, "health", health)
		if s, err = cpvip.NewBGPMode(cfg, log); err != nil {
			fmt.Fprintln(os.Stderr, "ironlb-speaker control-plane:", err)
			return 2
		}
	} else {
		cfg, h, err := o.layer2Config()
		if err != nil {
			fmt.Fprintln(os.Stderr, "ironlb-speaker control-plane:", err)
			return 2
		}
		health = h
		log.Info("Control-plane speaker starting", "version", version.Version, "mode", o.mode, "vip", cfg.VIP, "interface", cfg.Interface, "nodeIP", cfg.NodeIP, "health", health)
		s = cpvip.NewSpeaker(cfg, log)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	// The endpoints are served on the node IP (kubectl ironlb status reads
	// /status there through the API server's node proxy) and on loopback,
	// where the static pod's liveness probe asks, whichever address the
	// kubelet takes for the pod's.
	listen := []string{health, net.JoinHostPort("127.0.0.1", strconv.Itoa(o.healthPort))}
	errc := make(chan error, len(listen))
	for _, addr := range listen {
		go func() { errc <- s.ListenAndServe(ctx, addr) }()
	}
	err := s.Run(ctx)
	cancel()
	for range listen {
		if herr := <-errc; err == nil {
			err = herr
		}
	}
	if err != nil {
		log.Error(err, "Control-plane speaker failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	log.Info("Control-plane speaker stopped")
	klog.Flush()
	return 0
}

// controlPlaneFlags returns the control-plane subcommand's flags, which set
// o and logCfg. The static pod's arguments (cpvip.StaticPod) are checked
// against it.
func controlPlaneFlags(o *cpOptions, logCfg *logsapi.LoggingConfiguration) *pflag.FlagSet {
	host, _ := os.Hostname()
	node := os.Getenv("NODE_NAME")
	if node == "" {
		node = host
	}
	fs := pflag.NewFlagSet("ironlb-speaker control-plane", pflag.ContinueOnError)
	fs.StringVar(&o.vip, "vip", "", "the control-plane VIP (IPv4 or IPv6; required)")
	fs.StringVar(&o.mode, "mode", "l2", `"l2": elect one holder over the LAN; "bgp": every ready node advertises the VIP`)
	fs.StringVar(&o.ifc, "interface", "", "interface of the election and the ARP/NDP answers (default: the one whose subnet contains the VIP); in mode bgp, the interface whose address the sessions come from (default: the one routing to the first --bgp-peer)")
	fs.StringVar(&o.node, "node-name", node, "this node's name (default $NODE_NAME, else the hostname)")
	fs.StringVar(&o.readyzURL, "apiserver-readyz-url", "https://127.0.0.1:6443/readyz", "the local kube-apiserver's readiness URL")
	fs.StringVar(&o.caFile, "apiserver-ca-file", "/etc/kubernetes/pki/ca.crt", "CA of the kube-apiserver's certificate (missing: not ready, retried)")
	fs.StringVar(&o.serverName, "apiserver-server-name", "kubernetes", "name the kube-apiserver's certificate must hold")
	fs.StringArrayVar(&o.keyFiles, "key-file", []string{"/etc/kubernetes/pki/sa.key"}, "file of at least 32 bytes the election key is derived from (repeatable: the first signs, every one verifies; missing: waited for)")
	fs.IntVar(&o.port, "port", cpvip.DefaultPort, "UDP port of the election messages")
	fs.IntVar(&o.healthPort, "health-port", cpvip.DefaultHealthPort, "port of /healthz, /readyz, /status and /metrics over plain HTTP, on the node IP")
	fs.StringSliceVar(&o.peers, "peers", nil, "other control-plane nodes' IPs to send the election messages to by unicast as well as by broadcast")
	cpvip.AddBGPFlags(fs, &o.bgp)
	logsapi.AddFlags(logCfg, fs)
	fs.SetNormalizeFunc(flag.WordSepNormalizeFunc)
	return fs
}

// vipOnNode checks the options both modes share: the VIP and the node's
// name; it returns the VIP.
func (o cpOptions) vipOnNode() (netip.Addr, error) {
	vip, err := netip.ParseAddr(o.vip)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("--vip %q: want an IPv4 or IPv6 address", o.vip)
	}
	if o.node == "" {
		return netip.Addr{}, errors.New("--node-name: empty, and neither $NODE_NAME nor the hostname is set")
	}
	return vip.Unmap(), nil
}

// layer2Config checks the options and works out the interface, node IP and
// broadcast address; it returns the health endpoint's address too.
func (o cpOptions) layer2Config() (cpvip.Layer2Config, string, error) {
	var cfg cpvip.Layer2Config
	switch o.mode {
	case "l2":
	case "bgp":
		return cfg, "", errors.New("--mode bgp has no layer-2 configuration")
	default:
		return cfg, "", fmt.Errorf("--mode %q: want l2 or bgp", o.mode)
	}
	vip, err := o.vipOnNode()
	if err != nil {
		return cfg, "", err
	}
	if len(o.keyFiles) == 0 {
		return cfg, "", errors.New("--key-file: at least one is required (the election is never unauthenticated)")
	}
	if o.port <= 0 || o.port > 65535 || o.healthPort <= 0 || o.healthPort > 65535 {
		return cfg, "", errors.New("--port and --health-port must be 1-65535")
	}
	var peers []netip.Addr
	for _, p := range o.peers {
		a, err := netip.ParseAddr(p)
		if err != nil {
			return cfg, "", fmt.Errorf("--peers %q: %w", p, err)
		}
		peers = append(peers, a.Unmap())
	}
	ifc, prefix, err := vipInterface(vip, o.ifc)
	if err != nil {
		return cfg, "", err
	}
	cfg = cpvip.Layer2Config{
		VIP: vip, Interface: ifc, Node: o.node, NodeIP: prefix.Addr(),
		Broadcast: cpvip.Broadcast(prefix), Peers: peers, Port: o.port, KeyFiles: o.keyFiles,
		Readiness: cpvip.ReadinessConfig{URL: o.readyzURL, CAFile: o.caFile, ServerName: o.serverName},
	}
	return cfg, net.JoinHostPort(prefix.Addr().String(), strconv.Itoa(o.healthPort)), nil
}

// vipInterface returns the interface (name, or the one whose subnet
// contains vip when name is empty) and its first address in vip's family,
// with its prefix. Loopback interfaces and host routes (/32, /128: the VIP
// itself on lo) never count.
func vipInterface(vip netip.Addr, name string) (string, netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", netip.Prefix{}, fmt.Errorf("listing interfaces: %w", err)
	}
	for _, ifi := range ifs {
		if (name != "" && ifi.Name != name) || (name == "" && ifi.Flags&net.FlagLoopback != 0) {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return "", netip.Prefix{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
		}
		var first netip.Prefix
		for _, a := range addrs {
			pn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, _ := netip.AddrFromSlice(pn.IP)
			ones, _ := pn.Mask.Size()
			p := netip.PrefixFrom(ip.Unmap(), ones)
			if p.Addr().Is4() != vip.Is4() || p.Addr().IsLinkLocalUnicast() || p.IsSingleIP() || p.Addr() == vip {
				continue
			}
			if !first.IsValid() {
				first = p
			}
			if name == "" && p.Contains(vip) {
				return ifi.Name, p, nil
			}
		}
		if name != "" {
			if !first.IsValid() {
				return "", netip.Prefix{}, fmt.Errorf("--interface %s has no address in the VIP's family", name)
			}
			return name, first, nil
		}
	}
	if name != "" {
		return "", netip.Prefix{}, fmt.Errorf("--interface %s: no such interface", name)
	}
	return "", netip.Prefix{}, fmt.Errorf("no interface's subnet contains the VIP %s: set --interface", vip)
}
