package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/layer2"
)

// layer2Announcer is a layer-2 responder as the agent's Announcer: it
// converts the responder's claims to speaker.Claim.
type layer2Announcer struct{ *layer2.Responder }

// Probe implements speaker.Announcer.
func (l layer2Announcer) Probe(ctx context.Context, addrs []netip.Addr) (map[netip.Addr]speaker.Claim, error) {
	got, err := l.Responder.Probe(ctx, addrs)
	if err != nil {
		return nil, fmt.Errorf("probing on %s: %w", l.Interface().Name, err)
	}
	out := make(map[netip.Addr]speaker.Claim, len(got))
	for a, c := range got {
		out[a] = speakerClaim(c)
	}
	return out, nil
}

func speakerClaim(c layer2.Claim) speaker.Claim {
	return speaker.Claim{Addr: c.Addr, MAC: c.MAC, Kind: string(c.Kind), At: c.At}
}

// layer2Factory opens layer-2 responders for the agent.
func layer2Factory(log logr.Logger) speaker.AnnouncerFactory {
	return func(ifi *net.Interface, onClaim func(speaker.Claim)) (speaker.Announcer, error) {
		r, err := layer2.NewResponder(ifi,
			layer2.WithLogger(log.WithName("layer2").WithValues("interface", ifi.Name)),
			layer2.WithClaims(func(c layer2.Claim) { onClaim(speakerClaim(c)) }))
		if err != nil {
			return nil, err
		}
		return layer2Announcer{r}, nil
	}
}
