package main

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/ironlb/ironlb/speaker/guard"
)

// addresses are where the speaker listens for the CCM and serves its
// plain-HTTP endpoints: the node IP unless told otherwise, so that the
// speaker is not reachable on every address of the node (a public
// interface, say).
func addresses(o options) (listen, health string, err error) {
	listen, health = o.listen, o.health
	if listen == "" || health == "" {
		if o.nodeIP == "" {
			return "", "", errors.New("--node-ip (or $NODE_IP) is required unless --listen and --health-address are given")
		}
		if listen == "" {
			listen = net.JoinHostPort(o.nodeIP, strconv.Itoa(o.port))
		}
		if health == "" {
			health = net.JoinHostPort(o.nodeIP, strconv.Itoa(o.healthPort))
		}
	}
	if health == "off" {
		health = ""
	}
	return listen, health, nil
}

// serverOptions are the gRPC server's: mutual TLS with at most
// guard.DefaultMaxHandshakes handshakes at once (guard.DefaultMaxHandshakesPerIP
// from one address) and guard.DefaultReservedHandshakes more for the
// CCM's sources (ccm, and those that completed a handshake), each (with
// the HTTP/2 preface) within guard.DefaultHandshakeTimeout; keepalive
// pings to find dead CCMs; few streams per connection (a CCM uses one or
// two).
func serverOptions(tlsCfg *tls.Config, ccm []netip.Prefix) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(guard.NewHandshakes(credentials.NewTLS(tlsCfg), guard.DefaultMaxHandshakes, guard.DefaultMaxHandshakesPerIP,
			guard.WithReserved(guard.DefaultReservedHandshakes), guard.WithCCMPrefixes(ccm))),
		grpc.ConnectionTimeout(guard.DefaultHandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second}),
		grpc.MaxConcurrentStreams(16),
	}
}

// healthServer serves h on addr with timeouts, so that slow or idle
// clients cannot hold connections.
func healthServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}
