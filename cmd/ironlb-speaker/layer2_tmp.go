//go:build !layer2claims

// TEMPORARY until speaker/layer2 has WithClaims and Responder.Probe
// (issue 21, WP-A): then delete this file and the build tag of layer2.go.

package main

import (
	"context"
	"net"
	"net/netip"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/layer2"
)

// layer2Announcer is a layer-2 responder that neither probes nor reports
// claims.
type layer2Announcer struct{ *layer2.Responder }

// Probe finds no address in use.
func (layer2Announcer) Probe(context.Context, []netip.Addr) (map[netip.Addr]speaker.Claim, error) {
	return nil, nil
}

// layer2Factory opens layer-2 responders for the agent.
func layer2Factory(log logr.Logger) speaker.AnnouncerFactory {
	return func(ifi *net.Interface, _ func(speaker.Claim)) (speaker.Announcer, error) {
		r, err := layer2.NewResponder(ifi, layer2.WithLogger(log.WithName("layer2").WithValues("interface", ifi.Name)))
		if err != nil {
			return nil, err
		}
		return layer2Announcer{r}, nil
	}
}
