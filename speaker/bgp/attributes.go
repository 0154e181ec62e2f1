package bgp

import (
	"fmt"
	"strconv"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
)

// wellKnownCommunities are the community names IPPool accepts, as values
// (RFC 1997, RFC 3765, RFC 7999, RFC 8326, RFC 7611, RFC 9494).
var wellKnownCommunities = map[string]string{
	"no-export":           "65535:65281",
	"no-advertise":        "65535:65282",
	"no-export-subconfed": "65535:65283",
	"no-peer":             "65535:65284",
	"blackhole":           "65535:666",
	"graceful-shutdown":   "65535:0",
	"accept-own":          "65535:1",
	"llgr-stale":          "65535:6",
	"no-llgr":             "65535:7",
}

// communityValue is c as two numbers, "65535:65281" for "no-export".
func communityValue(c string) (string, error) {
	if v, ok := wellKnownCommunities[c]; ok {
		return v, nil
	}
	hi, lo, ok := strings.Cut(c, ":")
	if !ok {
		return "", fmt.Errorf("community %q: want two numbers, 65000:100, or a well-known name", c)
	}
	for _, n := range []string{hi, lo} {
		if _, err := strconv.ParseUint(n, 10, 16); err != nil {
			return "", fmt.Errorf("community %q: %s is not a number from 0 to 65535", c, n)
		}
	}
	return c, nil
}

// apiActions are the export actions that give a path attrs and accept it.
func apiActions(attrs Attributes) (*api.Actions, error) {
	a := &api.Actions{RouteAction: api.RouteAction_ACCEPT}
	if len(attrs.Communities) > 0 {
		cs := make([]string, 0, len(attrs.Communities))
		for _, c := range attrs.Communities {
			v, err := communityValue(c)
			if err != nil {
				return nil, err
			}
			cs = append(cs, v)
		}
		a.Community = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: cs}
	}
	if len(attrs.LargeCommunities) > 0 {
		for _, c := range attrs.LargeCommunities {
			parts := strings.Split(c, ":")
			if len(parts) != 3 {
				return nil, fmt.Errorf("large community %q: want three numbers, 65000:1:2", c)
			}
			for _, n := range parts {
				if _, err := strconv.ParseUint(n, 10, 32); err != nil {
					return nil, fmt.Errorf("large community %q: %s is not a 32-bit number", c, n)
				}
			}
		}
		a.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: attrs.LargeCommunities}
	}
	if attrs.LocalPref != nil {
		a.LocalPref = &api.LocalPrefAction{Value: *attrs.LocalPref}
	}
	if attrs.MED != nil {
		a.Med = &api.MedAction{Type: api.MedAction_REPLACE, Value: int64(*attrs.MED)}
	}
	return a, nil
}
