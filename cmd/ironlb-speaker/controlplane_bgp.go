package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/ironlb/ironlb/cpvip"
)

// bgpConfig checks the options of mode bgp and works out the interface and
// node IP (the sessions' source); it returns the health endpoint's address
// too.
func (o cpOptions) bgpConfig() (cpvip.BGPModeConfig, string, error) {
	var cfg cpvip.BGPModeConfig
	vip, err := o.vipOnNode()
	if err != nil {
		return cfg, "", err
	}
	if o.healthPort <= 0 || o.healthPort > 65535 {
		return cfg, "", errors.New("--health-port must be 1-65535")
	}
	if len(o.peers) > 0 {
		return cfg, "", errors.New("--peers is the layer-2 election's; mode bgp takes --bgp-peer")
	}
	if err := o.bgp.Validate(); err != nil {
		return cfg, "", err
	}
	ifc := o.ifc
	if ifc == "" {
		if ifc, err = cpvip.InterfaceToward(o.bgp.Peers[0]); err != nil {
			return cfg, "", fmt.Errorf("%w: set --interface", err)
		}
	}
	_, prefix, err := vipInterface(vip, ifc)
	if err != nil {
		return cfg, "", err
	}
	cfg = cpvip.BGPModeConfig{
		VIP: vip, Node: o.node, NodeIP: prefix.Addr(), BGP: o.bgp,
		Readiness: cpvip.ReadinessConfig{URL: o.readyzURL, CAFile: o.caFile, ServerName: o.serverName, ReadyAfter: cpvip.BGPReadyAfter},
	}
	return cfg, net.JoinHostPort(prefix.Addr().String(), strconv.Itoa(o.healthPort)), nil
}
