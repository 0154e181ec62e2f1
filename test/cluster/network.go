package cluster

import (
	"fmt"
	"net/netip"

	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
)

// The cluster's addresses: documentation ranges only (RIG.md).
//
//	192.0.2.0/24       the LAN: router .1, node-N .1N, layer-2 VIPs .200-.239,
//	                   the control-plane VIP .250
//	203.0.113.0/24     behind the router: the outside client .10 (off the nodes' /16)
//	198.51.100.0/26    BGP VIPs (routed by the router to the nodes)
//	198.51.100.64/26   Services' cluster IPs
//	198.51.100.128/25  pods: a /27 per node
var (
	LAN           = netip.MustParsePrefix("192.0.2.0/24")
	RouterIP      = netip.MustParseAddr("192.0.2.1")
	Outside       = netip.MustParsePrefix("203.0.113.0/24")
	RouterOutside = netip.MustParseAddr("203.0.113.1")
	ClientIP      = netip.MustParseAddr("203.0.113.10")
	BGPPool       = netip.MustParsePrefix("198.51.100.0/26")
	ServiceCIDR   = netip.MustParsePrefix("198.51.100.64/26")
	PodCIDR       = netip.MustParsePrefix("198.51.100.128/25")
	// PodCIDRBits is the size of each node's pod range (kube-controller-
	// manager's --node-cidr-mask-size): 4 nodes, 30 pods each.
	PodCIDRBits = 27
	// L2PoolRange are the layer-2 VIPs, on the nodes' LAN.
	L2PoolRange = "192.0.2.200-192.0.2.239"
	// ControlPlaneVIP is the API server's address when the control plane
	// sits behind IronLB's control-plane VIP (Options.VIP, more than one
	// control-plane node): on the LAN, off the layer-2 pool.
	ControlPlaneVIP = netip.MustParseAddr("192.0.2.250")
	RouterASN       = uint32(64512)
	NodeASN         = uint32(64513)
	// MaxNodes is how many nodes the pod range holds.
	MaxNodes = 1 << (PodCIDRBits - PodCIDR.Bits())
)

// NodeIP is the address of node n (1-based) on the LAN.
func NodeIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + n)}) }

// NodeName is the name of node n (1-based): node-1 is the (first)
// control-plane node.
func NodeName(n int) string { return fmt.Sprintf("node-%d", n) }

// network is the LAN, the router with FRR between it and the outside
// segment, the outside client, and one host namespace per node.
type network struct {
	lan, outside *netrig.LAN
	router       *frr.Router
	client       *netrig.Host
	nodes        []*netrig.Host
}

// routerConfig is FRR's bgpd configuration: the speakers of the nodes'
// LAN dial in as dynamic neighbors (no line per node), every node's path
// is used (ECMP over up to 16 next hops), no eBGP policy is required.
func routerConfig() string {
	return fmt.Sprintf(`router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor nodes peer-group
 neighbor nodes remote-as %d
 neighbor nodes timers 3 9
 bgp listen range %s peer-group nodes
 address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
`, RouterASN, RouterIP, NodeASN, LAN)
}

// buildNetwork creates the LAN, the router (FRR, forwarding, layer-4 ECMP
// hashing), the outside client and n node hosts with forwarding on (pods
// are routed through their node).
func buildNetwork(n int) (net *network, err error) {
	net = &network{}
	defer func() {
		if err != nil {
			net.close()
		}
	}()
	if net.lan, err = netrig.NewLANNoTest(); err != nil {
		return nil, err
	}
	if net.outside, err = netrig.NewLANNoTest(); err != nil {
		return nil, err
	}
	rh, err := net.lan.AddHost("router", netip.PrefixFrom(RouterIP, LAN.Bits()))
	if err != nil {
		return nil, err
	}
	if err := rh.AttachTo(net.outside, "eth1", netip.PrefixFrom(RouterOutside, Outside.Bits())); err != nil {
		return nil, err
	}
	if net.client, err = net.outside.AddHost("client", netip.PrefixFrom(ClientIP, Outside.Bits())); err != nil {
		return nil, err
	}
	if err := net.client.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), RouterOutside); err != nil {
		return nil, err
	}
	for i := 1; i <= n; i++ {
		h, err := net.lan.AddHost(fmt.Sprintf("node%d", i), netip.PrefixFrom(NodeIP(i), LAN.Bits()))
		if err != nil {
			return nil, err
		}
		// A real host answers ARP for its own addresses normally; netrig
		// sets arp_ignore for its simulated nodes only.
		for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.all.arp_announce=0"} {
			if _, err := h.Run("sysctl", "-q", "-w", kv); err != nil {
				return nil, err
			}
		}
		if err := h.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), RouterIP); err != nil {
			return nil, err
		}
		net.nodes = append(net.nodes, h)
	}
	if net.router, err = frr.Start(rh, routerConfig()); err != nil {
		return nil, err
	}
	return net, nil
}

// close removes everything the network made: FRR, namespaces and whatever
// still runs in them.
func (n *network) close() error {
	var errs []error
	if n.router != nil {
		if err := n.router.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range []*netrig.LAN{n.outside, n.lan} {
		if l != nil {
			if err := l.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing the network: %v", errs)
	}
	return nil
}
