package bgp

import (
	"context"
	"net/netip"
)

// Router is the BGP implementation the Reconciler drives: gobgp in the
// speaker, a fake in unit tests.
type Router interface {
	// Start starts the server with its AS number and identifier.
	Start(ctx context.Context, asn uint32, routerID netip.Addr) error
	// Stop stops it: peers get a Cease notification and drop the
	// routes at once. After Stop(graceful) the sessions of peers with
	// graceful restart are left open for the process's exit to close
	// without a notification (so those peers keep the routes); the
	// server cannot be used again.
	Stop(ctx context.Context, graceful bool) error

	// AddPeer opens a session; UpdatePeer changes one in place (gobgp
	// resets it when it must); DeletePeer closes one.
	AddPeer(ctx context.Context, p Peer) error
	UpdatePeer(ctx context.Context, p Peer) error
	DeletePeer(ctx context.Context, addr netip.Addr) error
	// ResetPeer closes a session at once (BFD found the peer lost) and
	// lets it reconnect; why is sent to the peer.
	ResetPeer(ctx context.Context, addr netip.Addr, why string) error

	// Export lets prefix go to peer with attrs, replacing the attributes
	// it went with before; Unexport stops it going there. Neither sends
	// anything for a path that exists already until Refresh(peer).
	Export(ctx context.Context, e Export, attrs Attributes) error
	Unexport(ctx context.Context, e Export) error
	// Refresh re-sends the peer what it should have now.
	Refresh(ctx context.Context, peer netip.Addr) error

	// AddPath originates prefix (sent to the peers it is exported to);
	// DeletePath withdraws it.
	AddPath(ctx context.Context, prefix netip.Prefix, nextHopV6 netip.Addr) error
	DeletePath(ctx context.Context, prefix netip.Prefix) error

	// Sessions reports every peer's session.
	Sessions(ctx context.Context) ([]Session, error)
}
