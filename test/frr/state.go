package frr

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Neighbor is one BGP neighbor as FRR sees it.
type Neighbor struct {
	State string `json:"bgpState"`
	// LastResetDueTo says why the session last went down.
	LastResetDueTo string `json:"lastResetDueTo"`
	// UpMsec is how long the session has been Established.
	UpMsec int64 `json:"bgpTimerUpMsec"`
	// HoldTimeMsecs is the hold time negotiated.
	HoldTimeMsecs int `json:"bgpTimerHoldTimeMsecs"`
	// Dropped counts the times the session went down.
	Dropped int `json:"connectionsDropped"`
}

// Neighbors returns FRR's BGP neighbors by address.
func (r *Router) Neighbors(ctx context.Context) (map[string]Neighbor, error) {
	var m map[string]Neighbor
	if err := r.JSON(ctx, "show bgp neighbors json", &m); err != nil {
		return nil, err
	}
	return m, nil
}

// Path is one BGP path for a prefix in FRR's table.
type Path struct {
	Valid     bool `json:"valid"`
	Multipath bool `json:"multipath"`
	// Stale marks a path kept for a peer that is restarting (graceful
	// restart).
	Stale    bool `json:"stale"`
	Bestpath *struct {
		Overall bool `json:"overall"`
	} `json:"bestpath"`
	Community *struct {
		String string `json:"string"`
	} `json:"community"`
	LargeCommunity *struct {
		String string `json:"string"`
	} `json:"largeCommunity"`
	LocalPref int `json:"locPrf"`
	// MED is the path's MULTI_EXIT_DISC ("metric" in FRR's JSON).
	MED  int `json:"metric"`
	Peer struct {
		PeerID string `json:"peerId"`
	} `json:"peer"`
	Nexthops []struct {
		IP string `json:"ip"`
	} `json:"nexthops"`
}

// Paths returns FRR's BGP paths for prefix (none when it has no route).
func (r *Router) Paths(ctx context.Context, prefix netip.Prefix) ([]Path, error) {
	family := "ipv4"
	if prefix.Addr().Is6() {
		family = "ipv6"
	}
	var out struct {
		Paths []Path `json:"paths"`
	}
	if err := r.JSON(ctx, fmt.Sprintf("show bgp %s unicast %s json", family, prefix), &out); err != nil {
		return nil, err
	}
	return out.Paths, nil
}

// KernelNextHops returns the next hops of prefix's route in the router
// namespace's kernel table, sorted; none when there is no such route.
func (r *Router) KernelNextHops(prefix netip.Prefix) ([]string, error) {
	args := []string{"ip", "-j"}
	if prefix.Addr().Is6() {
		args = append(args, "-6")
	}
	args = append(args, "route", "show", "exact", prefix.String())
	out, err := r.Host.Run(args...)
	if err != nil {
		return nil, err
	}
	return parseKernelNextHops(out)
}

func parseKernelNextHops(out string) ([]string, error) {
	var routes []struct {
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return nil, err
	}
	var hops []string
	for _, rt := range routes {
		if rt.Gateway != "" {
			hops = append(hops, rt.Gateway)
		}
		for _, nh := range rt.Nexthops {
			hops = append(hops, nh.Gateway)
		}
	}
	slices.Sort(hops)
	return hops, nil
}
