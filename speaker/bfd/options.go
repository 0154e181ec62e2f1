package bfd

import (
	"net/netip"
	"time"

	"github.com/go-logr/logr"
)

// Config is one session the Server keeps. Sessions are keyed by (Peer, Local
// as configured, Multihop).
type Config struct {
	// Peer is the address of the remote system.
	Peer netip.Addr
	// Local is the source address; when invalid the kernel chooses it by
	// route, and the session learns and reports it (Status.LocalAddr).
	Local netip.Addr
	// Multihop selects RFC 5883 (port 4784) instead of RFC 5881 (port 3784).
	Multihop bool
	// MaxHops, for multihop sessions only, makes packets acceptable with a
	// TTL of at least 256-MaxHops; 0 means 255 (accept only TTL 255).
	MaxHops uint8
	// DesiredMinTx, RequiredMinRx and DetectMultiplier are the timers of
	// RFC 5880 §4.1. Intervals must be in [10ms, 2^32µs).
	DesiredMinTx     time.Duration
	RequiredMinRx    time.Duration
	DetectMultiplier uint8
}

// Status reports one session.
type Status struct {
	Config // as configured

	LocalAddr   netip.Addr // the source address actually used
	State       State
	RemoteState State
	LocalDiag   Diag
	RemoteDiag  Diag
	LocalDiscr  uint32
	RemoteDiscr uint32
	Since       time.Time     // when State was entered
	TxInterval  time.Duration // negotiated transmit interval in use (before jitter)
	DetectTime  time.Duration // detection time in use (0 while the remote is unknown)
	RemoteMinRx time.Duration
	RemoteMinTx time.Duration

	RemoteMultiplier              uint8
	RemoteControlPlaneIndependent bool
	Flaps                         uint64 // Up→Down transitions
	// Reason says in plain words why the session is not Up; empty when Up.
	Reason string
}

// Option configures a Server.
type Option func(*Server)

// WithLogger makes the Server log to l (default: nowhere).
func WithLogger(l logr.Logger) Option { return func(s *Server) { s.log = l } }

// WithNet makes the Server open its sockets with n instead of the kernel's
// UDP sockets; it is the seam for tests.
func WithNet(n Net) Option { return func(s *Server) { s.net = n } }

// WithOnChange makes the Server call f on every State change of a session,
// not holding the Server's lock, from a single goroutine, so in order per
// session. f must not call Close or Shutdown.
func WithOnChange(f func(Status)) Option { return func(s *Server) { s.notify.f = f } }
