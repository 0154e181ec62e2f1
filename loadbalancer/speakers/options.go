package speakers

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"time"

	"github.com/ironlb/ironlb/pki"
)

// Defaults for Options.
const (
	// DefaultHeartbeat and DefaultMisses declare a silent speaker lost
	// after 225 ms: its layer-2 VIPs move within 0.3 s.
	DefaultHeartbeat = 75 * time.Millisecond
	DefaultMisses    = 3
	// DefaultRestartGrace bounds how long a restarting speaker's VIPs
	// stay on its node (see State.Restarting).
	DefaultRestartGrace = 30 * time.Second
)

// Options configures a Manager.
type Options struct {
	// Port is where speakers listen.
	Port int
	// Heartbeat is the interval between heartbeats; a speaker that answers
	// nothing for Heartbeat×Misses is declared lost.
	Heartbeat time.Duration
	Misses    int
	// HeartbeatRate bounds the heartbeats per second summed over all
	// streams: with more speakers than it allows at Heartbeat, each stream
	// uses a multiple of Heartbeat (see DefaultHeartbeatRate). 0 means
	// DefaultHeartbeatRate; negative means no bound.
	HeartbeatRate int
	// RestartGrace is how long a speaker that ended its stream with
	// ReasonRestarting may take to come back before its VIPs move (see
	// State.Restarting); default DefaultRestartGrace.
	RestartGrace time.Duration
	// Identity authenticates speakers (each by its node certificate) and
	// certifies them: pki.Bundle.
	Identity Identity
	// Leader names this CCM instance in the speakers' logs.
	Leader string
	// Term is this leader's term (see api/speaker/v1: Fencing), sent with
	// every snapshot and update.
	Term uint64
	// Valid, when set, is checked before every instruction is sent: once it
	// fails (this CCM may have lost its Lease) nothing more is sent, even
	// before the context ends.
	Valid func() error
	// Allocated is what this CCM allocated (the allocator): the first
	// report of a speaker's stream counts a VIP only when it is allocated,
	// and may be as large as a report of every allocated VIP (see
	// reportLimit); later reports count only the VIPs of the speaker's
	// node, and are held to its size (see nodeLimit). Nil: the first
	// report counts any address, and is sized for defaultReportVIPs
	// (tests).
	Allocated Allocated
	// Dial overrides how connections are made (tests).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Identity is how the CCM authenticates each speaker as its node and
// gives it its node certificate; *pki.Bundle implements it.
type Identity interface {
	// ClientTLSConfig is the TLS configuration of one connection to node's
	// speaker; peer learns whether the speaker proved to be node's.
	ClientTLSConfig(node string, peer *pki.Peer) *tls.Config
	// Enroll checks token and certifies the key of a speaker not enrolled.
	Enroll(ctx context.Context, node string, peer *pki.Peer, token string) (*pki.Credentials, error)
	// RenewalDue is when an enrolled speaker's certificate should be
	// replaced.
	RenewalDue(peer *pki.Peer) time.Time
	// Renew certifies an enrolled speaker's key again once token proves
	// again what enrollment proved.
	Renew(ctx context.Context, node string, peer *pki.Peer, token string) (*pki.Credentials, error)
	// Changed is closed when the CAs change (a rotation): RenewalDue may
	// then be earlier, and the speakers get BundlePEM.
	Changed() <-chan struct{}
	// BundlePEM is every CA trusted now.
	BundlePEM() []byte
	// Revoked is closed when a speaker pod or a Node is deleted: open
	// streams then Check their speaker.
	Revoked() <-chan struct{}
	// Check reports whether an enrolled speaker's certificate still
	// proves its node (its pod and its Node exist).
	Check(node string, peer *pki.Peer) error
}

var _ Identity = (*pki.Bundle)(nil)

// Allocated is what the CCM allocated; *ipam.Allocator implements it.
type Allocated interface {
	// HoldsEach reports, for each of addrs, whether it is allocated; the
	// allocator's lock is taken once for all of them.
	HoldsEach(addrs []netip.Addr) []bool
	// Held is how many addresses are allocated.
	Held() int
}
