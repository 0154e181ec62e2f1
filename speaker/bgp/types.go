// Package bgp advertises a node's VIPs to its BGP peers with an embedded
// gobgp server. The CCM says which peers to open sessions with and which
// prefixes go to which peer with which attributes (Desired); a Reconciler
// diffs that against what it applied before and calls a Router, whose
// gobgp implementation never listens for connections.
package bgp

import (
	"net/netip"
	"slices"
	"time"
)

// Peer is one BGP session the node opens.
type Peer struct {
	// Address is the router's address; it names the peer.
	Address netip.Addr
	// Port is the router's BGP port (179 when 0).
	Port uint16
	// PeerASN and MyASN are the router's and the node's AS numbers.
	PeerASN, MyASN uint32
	// SourceAddress is the local address of the session; invalid lets
	// the kernel choose.
	SourceAddress netip.Addr
	// HoldTime and KeepaliveTime are the session timers; a zero
	// KeepaliveTime means a third of HoldTime.
	HoldTime, KeepaliveTime time.Duration
	// ConnectRetry is the time between connection attempts.
	ConnectRetry time.Duration
	// EBGPMultihop is the TTL for a peer that is not directly connected;
	// 0 means directly connected.
	EBGPMultihop uint8
	// Password is the TCP MD5 password; empty for none.
	Password string
	// BFD are the peer's BFD timers; the zero value turns BFD off.
	BFD BFDTimers
	// RestartTime is the graceful restart time advertised to the peer;
	// 0 turns graceful restart off.
	RestartTime time.Duration
}

// BFDTimers are a BFD session's timers (RFC 5880).
type BFDTimers struct {
	// ReceiveInterval is the Required Min RX Interval, TransmitInterval
	// the Desired Min TX Interval.
	ReceiveInterval, TransmitInterval time.Duration
	// Multiplier is the Detect Mult; 0 turns BFD off.
	Multiplier uint8
}

// Enabled reports whether BFD is on.
func (t BFDTimers) Enabled() bool { return t.Multiplier > 0 }

// Attributes are the path attributes a prefix is advertised with to a
// peer.
type Attributes struct {
	// Communities are standard communities, "65000:100" or well-known
	// names.
	Communities []string
	// LargeCommunities are large communities, "65000:1:2".
	LargeCommunities []string
	// LocalPref is LOCAL_PREF (iBGP only); nil sends none.
	LocalPref *uint32
	// MED is MULTI_EXIT_DISC; nil sends none.
	MED *uint32
}

// Equal reports whether a and b are the same attributes.
func (a Attributes) Equal(b Attributes) bool {
	if !equalPtr(a.LocalPref, b.LocalPref) || !equalPtr(a.MED, b.MED) {
		return false
	}
	return slices.Equal(a.Communities, b.Communities) && slices.Equal(a.LargeCommunities, b.LargeCommunities)
}

// key is a string that is equal for equal attributes (communities in the
// order given).
func (a Attributes) key() string {
	k := "c"
	for _, c := range a.Communities {
		k += "," + c
	}
	k += ";l"
	for _, c := range a.LargeCommunities {
		k += "," + c
	}
	if a.LocalPref != nil {
		k += ";p" + itoa(*a.LocalPref)
	}
	if a.MED != nil {
		k += ";m" + itoa(*a.MED)
	}
	return k
}

func equalPtr(a, b *uint32) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// Export is a prefix advertised to one peer.
type Export struct {
	Peer   netip.Addr
	Prefix netip.Prefix
}

// Desired is everything the node should advertise.
type Desired struct {
	// ASN is the server's own AS number (peers may override it with
	// MyASN); RouterID its BGP identifier. Changing either restarts the
	// server.
	ASN      uint32
	RouterID netip.Addr
	// NextHopV6 is the next hop of IPv6 prefixes sent over IPv4 sessions
	// (the node's IPv6 address); invalid when the node has none.
	NextHopV6 netip.Addr
	// Peers are the sessions to hold.
	Peers []Peer
	// Exports say which prefix goes to which peer, with which attributes:
	// the full export table when Changed is nil, else the new exports of
	// the prefixes of Changed (entries of other prefixes are ignored).
	// The BGP side owns the map (and the slices in it) once it is given:
	// the caller must not change it afterwards.
	Exports map[Export]Attributes `json:"-"`
	// Changed, when not nil, makes d a patch of the previous Desired given
	// to Apply (whether or not that Apply succeeded): the entries of
	// Exports whose prefix is in Changed are the complete new exports of
	// those prefixes (a prefix of Changed with no entry is exported to
	// nobody), and every other prefix keeps the exports it had. A patch
	// costs O(change) to build and to apply, where a node exports
	// thousands of prefixes; a BGP side keeps the full table (Table).
	// Empty but not nil: no export changed. Nil: Exports is the full
	// table.
	Changed []netip.Prefix `json:"-"`
}

// Session is the observed state of one peer's session.
type Session struct {
	Peer netip.Addr
	// State is Idle, Connect, Active, OpenSent, OpenConfirm or
	// Established.
	State string
	// Since is when the session entered State, as far as gobgp knows.
	Since time.Time
	// Advertised counts the prefixes the peer should have (gobgp counts
	// them against the export policy, not what was sent).
	Advertised int
	// UpdatesSent counts the UPDATE messages written to the session.
	UpdatesSent uint64
	// LastError is why the session last failed or went down; empty
	// once it is established.
	LastError string
	// BFD is the peer's BFD session; nil when BFD is off.
	BFD *BFDSession
}

// BFDSession is the observed state of a peer's BFD session.
type BFDSession struct {
	// State and RemoteState are Up, Down, Init or AdminDown.
	State, RemoteState string
	Since              time.Time
	// Reason says why it is not Up; empty when Up.
	Reason string
	// TransmitInterval is the negotiated one; DetectTime the one in use.
	TransmitInterval, DetectTime time.Duration
	// Flaps counts Up→Down transitions.
	Flaps uint64
}

func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
