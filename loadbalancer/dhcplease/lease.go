// Package dhcplease keeps the DHCP leases of Service addresses drawn from
// DHCP-backed IPPools (spec.dhcp).
//
// Who talks DHCP: the CCM has no interface on the nodes' LAN, a speaker
// does. So the CCM keeps each lease (its address, server, expiry and when
// to renew it) and asks a speaker to run each exchange
// (api/speaker/v1: DHCPExchange). A lease is identified by its client
// identifier, which is derived from the cluster, the pool and the Service
// (or its sharing group), never from a node: whichever speaker asks, and
// after a restart of any component, the server sees the same client and
// answers with the same address. A VIP that moves to another node keeps its
// lease untouched; a speaker that restarts holds no lease state; a CCM that
// restarts adopts the leases of the addresses the Services' status lists
// (invariant 1: nothing but the API server is durable) and renews each at
// once, so the server confirms it (ACK) or takes it back (NAK).
//
// Renewal follows RFC 2131's timers: at T1 (the server's, else half the
// lease) a renewal; without an answer, again after a backoff until the
// lease expires; a NAK or the expiry ends the lease, and the Manager's
// OnLost callback withdraws the address. Speakers are tried in an order
// fixed per client (rendezvous hashing), so one lease's exchanges go
// through the same node while it is up.
package dhcplease

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Lease is one address leased from a DHCP server.
type Lease struct {
	// ClientID is the option-61 value the lease is held under.
	ClientID string
	// Pool is the IPPool the address is for, and Interface where the
	// speakers talk to the server ("": the node IP's).
	Pool, Interface string
	// Name names the holder in messages (a Service "namespace/name").
	Name string
	Addr netip.Addr
	// Server is the server identifier, ServerMAC where its ACK came from.
	Server    netip.Addr
	ServerMAC string
	// Granted is when the server last granted it; Expires when it ends
	// unless renewed (zero: unknown, for a lease adopted at a restart);
	// RenewAt when the next renewal is due.
	Granted, Expires, RenewAt time.Time
	// Node is the speaker that last ran an exchange for it.
	Node string
	// adopted is when the lease was adopted, while no server has
	// confirmed it (Expires unknown).
	adopted time.Time
}

// Errors, told apart with errors.Is.
var (
	// ErrNoSpeaker: no connected speaker runs DHCP exchanges.
	ErrNoSpeaker = errors.New("no connected speaker can talk to the DHCP server")
	// ErrNoAnswer: no DHCP server answered (it is down, or out of
	// addresses: servers stay silent then).
	ErrNoAnswer = errors.New("no DHCP server answered")
	// ErrRefused: the server answered with a NAK.
	ErrRefused = errors.New("the DHCP server refused")
	// ErrNotRequested: the server offered another address than the one
	// the Service asks for.
	ErrNotRequested = errors.New("the DHCP server does not give the requested address")
	// ErrInvalid: a speaker's answer broke the protocol's grammar, or the
	// speaker could not run the exchange.
	ErrInvalid = errors.New("invalid DHCP exchange")
)

// NotRequestedError says which address the server offered instead.
type NotRequestedError struct {
	Requested, Offered netip.Addr
}

func (e *NotRequestedError) Error() string {
	return fmt.Sprintf("%v: asked for %s, the server offers %s", ErrNotRequested, e.Requested, e.Offered)
}

// Unwrap makes errors.Is(err, ErrNotRequested) true.
func (e *NotRequestedError) Unwrap() error { return ErrNotRequested }

// ClientID returns the client identifier of the lease of holder (a Service
// UID, or "share/" and a scoped sharing key) for pool in cluster. It is a
// hash, so that nothing of the tenant's reaches the LAN, of bounded size
// and stable for the holder: "ironlb-" and 26 base32 characters.
func ClientID(cluster, pool, holder string) string {
	sum := sha256.Sum256([]byte(cluster + "\x00" + pool + "\x00" + holder))
	return "ironlb-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16]))
}
