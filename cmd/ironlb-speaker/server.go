package main

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
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
