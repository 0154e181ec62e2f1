package cpvip

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/ironlb/ironlb/speaker/bgp"
)

// The BGP mode's session timers, fixed: a control-plane VIP wants a
// session back within seconds of a router or node coming back (gobgp's
// defaults wait minutes), and BFD, not the hold time, detects a lost node.
const (
	bgpHoldTime     = 9 * time.Second
	bgpKeepalive    = 3 * time.Second
	bgpConnectRetry = time.Second
)

// Defaults of the BGP flags.
const (
	DefaultBFDInterval   = 300 * time.Millisecond
	DefaultBFDMultiplier = 3
)

// Bounds the flags are checked against.
const (
	minBFDInterval = 10 * time.Millisecond // bfd.Config's floor
	maxBFDInterval = 10 * time.Second
	maxPeers       = 16
	// maxPasswordLen bounds the password; TCP MD5 keys are at most
	// 80 bytes (RFC 2385 implementations, Linux's TCP_MD5SIG_MAXKEYLEN).
	maxPasswordLen = 80
)

// BGPConfig is the BGP mode's configuration, from the --bgp-* and --bfd*
// flags.
type BGPConfig struct {
	// Peers are the routers to peer with.
	Peers []netip.Addr
	// PeerASN is the routers' AS number, ASN the node's.
	PeerASN, ASN uint32
	// PasswordFile holds the sessions' TCP MD5 password; empty for none.
	PasswordFile string
	// BFD turns BFD on with every peer; BFDInterval is both the desired
	// transmit and the required receive interval.
	BFD           bool
	BFDInterval   time.Duration
	BFDMultiplier uint8
}

// AddBGPFlags defines the BGP mode's flags on fs, storing into c.
func AddBGPFlags(fs *pflag.FlagSet, c *BGPConfig) {
	fs.Var((*addrList)(&c.Peers), "bgp-peer", "a router to advertise the VIP to (mode bgp; repeat the flag for several)")
	fs.Uint32Var(&c.PeerASN, "bgp-peer-asn", 0, "the routers' AS number (mode bgp)")
	fs.Uint32Var(&c.ASN, "bgp-asn", 0, "this node's AS number (mode bgp)")
	fs.StringVar(&c.PasswordFile, "bgp-password-file", "", "file holding the BGP sessions' TCP MD5 password (mode bgp; default: none)")
	fs.BoolVar(&c.BFD, "bfd", true, "hold a BFD session with every router, so that a router drops a lost node's route within the detection time (mode bgp)")
	fs.DurationVar(&c.BFDInterval, "bfd-interval", DefaultBFDInterval, "BFD transmit and receive interval (mode bgp)")
	fs.Uint8Var(&c.BFDMultiplier, "bfd-multiplier", DefaultBFDMultiplier, "BFD detection multiplier: missed packets before a session is down (mode bgp)")
}

// addrList is a repeatable flag of IP addresses.
type addrList []netip.Addr

func (l *addrList) String() string {
	s := make([]string, len(*l))
	for i, a := range *l {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func (l *addrList) Set(v string) error {
	a, err := netip.ParseAddr(v)
	if err != nil {
		return err
	}
	if a.Zone() != "" {
		return fmt.Errorf("%s: an address with a zone cannot be a BGP peer", v)
	}
	*l = append(*l, a)
	return nil
}

func (l *addrList) Type() string { return "address" }

// Reasons the BGP configuration is refused.
var (
	ErrNoPeers = errors.New("mode bgp needs at least one --bgp-peer")
	ErrASN     = errors.New("invalid AS number")
)

// Validate checks c strictly: at least one peer, each a unicast address
// given once; AS numbers that a BGP session may carry; BFD timers the BFD
// package accepts.
func (c BGPConfig) Validate() error {
	if len(c.Peers) == 0 {
		return ErrNoPeers
	}
	if len(c.Peers) > maxPeers {
		return fmt.Errorf("%d --bgp-peer: at most %d", len(c.Peers), maxPeers)
	}
	for i, p := range c.Peers {
		if !p.IsValid() || p.IsUnspecified() || p.IsLoopback() || p.IsMulticast() || p.Is4In6() {
			return fmt.Errorf("--bgp-peer %s: not a router's unicast address", p)
		}
		if slices.Contains(c.Peers[:i], p) {
			return fmt.Errorf("--bgp-peer %s given twice", p)
		}
	}
	for _, x := range []struct {
		flag string
		asn  uint32
	}{{"--bgp-peer-asn", c.PeerASN}, {"--bgp-asn", c.ASN}} {
		// 0 and 65535/4294967295 are reserved (RFC 7607, 7300), 23456 is
		// AS_TRANS (RFC 6793).
		if x.asn == 0 || x.asn == 23456 || x.asn == 65535 || x.asn == 4294967295 {
			return fmt.Errorf("%s %d: %w", x.flag, x.asn, ErrASN)
		}
	}
	if c.BFD {
		if c.BFDInterval < minBFDInterval || c.BFDInterval > maxBFDInterval {
			return fmt.Errorf("--bfd-interval %s: want %s to %s", c.BFDInterval, minBFDInterval, maxBFDInterval)
		}
		if c.BFDInterval%time.Millisecond != 0 {
			return fmt.Errorf("--bfd-interval %s: want whole milliseconds", c.BFDInterval)
		}
		if c.BFDMultiplier == 0 {
			return errors.New("--bfd-multiplier 0: want 1 to 255")
		}
	}
	return nil
}

// readPassword reads the TCP MD5 password from path: the file's contents
// without a trailing newline, 1 to 80 printable ASCII characters.
func readPassword(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--bgp-password-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordLen+3))
	if err != nil {
		return "", fmt.Errorf("--bgp-password-file %s: %w", path, err)
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) == 0 || len(b) > maxPasswordLen {
		return "", fmt.Errorf("--bgp-password-file %s: want 1 to %d characters", path, maxPasswordLen)
	}
	for _, ch := range b {
		if ch < 0x20 || ch > 0x7e {
			return "", fmt.Errorf("--bgp-password-file %s: only printable ASCII characters", path)
		}
	}
	return string(b), nil
}

// desired is the gobgp set-up of c on node nodeIP: a session with every
// peer from the node's address (when the peer is in its family), BFD as
// configured, and the VIP's host route exported to every peer (advertised
// once its path is added: only while advertise).
func (c BGPConfig) desired(password string, vip, nodeIP netip.Addr, advertise bool) bgp.Desired {
	d := bgp.Desired{ASN: c.ASN, RouterID: routerID(nodeIP), Exports: map[bgp.Export]bgp.Attributes{}}
	if nodeIP.Is6() {
		d.NextHopV6 = nodeIP
	}
	prefix := netip.PrefixFrom(vip, vip.BitLen())
	for _, addr := range c.Peers {
		p := bgp.Peer{
			Address: addr, PeerASN: c.PeerASN, MyASN: c.ASN, Password: password,
			HoldTime: bgpHoldTime, KeepaliveTime: bgpKeepalive, ConnectRetry: bgpConnectRetry,
		}
		if addr.Is4() == nodeIP.Is4() {
			p.SourceAddress = nodeIP
		}
		if c.BFD {
			p.BFD = bgp.BFDTimers{ReceiveInterval: c.BFDInterval, TransmitInterval: c.BFDInterval, Multiplier: c.BFDMultiplier}
		}
		d.Peers = append(d.Peers, p)
		if advertise {
			d.Exports[bgp.Export{Peer: addr, Prefix: prefix}] = bgp.Attributes{}
		}
	}
	return d
}

// routerID is the node's BGP identifier: its IPv4 address, or for a node
// with an IPv6 address only, 32 bits of a hash of it (an identifier need
// only be unique among a router's peers), never 0.0.0.0.
func routerID(nodeIP netip.Addr) netip.Addr {
	if nodeIP.Is4() {
		return nodeIP
	}
	h := fnv.New32a()
	b := nodeIP.As16()
	h.Write(b[:])
	v := h.Sum32()
	if v == 0 {
		v = 1
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
