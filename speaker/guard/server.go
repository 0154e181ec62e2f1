package guard

import (
	"crypto/tls"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// ServerOptions are the speaker's gRPC server options: mutual TLS (tlsCfg)
// with at most DefaultMaxHandshakes handshakes at once
// (DefaultMaxHandshakesPerIP from one address) and DefaultReservedHandshakes
// more for the CCM's sources (ccm, and those that completed a handshake),
// each (with the HTTP/2 preface) within DefaultHandshakeTimeout; keepalive
// pings to find dead CCMs; few streams per connection (a CCM uses one or
// two). ironlb-speaker and the simulated speakers of test/simspeakers use
// them.
func ServerOptions(tlsCfg *tls.Config, ccm []netip.Prefix) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(NewHandshakes(credentials.NewTLS(tlsCfg), DefaultMaxHandshakes, DefaultMaxHandshakesPerIP,
			WithReserved(DefaultReservedHandshakes), WithCCMPrefixes(ccm))),
		grpc.ConnectionTimeout(DefaultHandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second}),
		grpc.MaxConcurrentStreams(16),
		grpc.InitialWindowSize(speakerv1.StreamWindow), grpc.InitialConnWindowSize(speakerv1.StreamWindow),
	}
}
