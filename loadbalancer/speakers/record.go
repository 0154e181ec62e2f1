package speakers

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// record takes in a report of stream gen; it reports whether connection,
// health, the failed VIPs or the BGP sessions changed.
func (s *session) record(gen uint64, r *speakerv1.Report) bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if gen != s.gen {
		return false
	}
	now := time.Now()
	s.lastReport = now
	s.state.LastReport = now
	before := s.state
	if r.GetAppliedVersion() > s.state.Applied {
		s.state.Applied = r.GetAppliedVersion()
	}
	if v := r.GetVersion(); v != "" || len(r.GetCapabilities()) > 0 {
		s.state.Version = v
	}
	s.state.Capabilities = speakerv1.CapabilitiesOf(r)
	if n := r.GetIgnoredInstructions(); n > 0 && n != s.ignored {
		s.ignored = n
		s.log.Info("Speaker ignored instructions it does not understand; upgrade it to the CCM's version", "ignored", n, "speakerVersion", s.state.Version)
	}
	s.state.Fenced, s.state.Stopped = false, false
	failedChanged := false
	if r.GetFull() {
		failedChanged = s.recordVIPs(r)
		s.state.Healthy, s.state.Problem = health(r)
		if !slices.EqualFunc(r.GetBgpSessions(), s.state.BGPSessions, func(a, b *speakerv1.BGPSessionStatus) bool { return proto.Equal(a, b) }) {
			s.recordFlaps(r.GetBgpSessions())
			s.state.BGPSessions = r.GetBgpSessions()
			failedChanged = true
		}
	}
	s.state.Connected = true
	s.state.Reported = true
	if s.draining && s.state.Applied >= s.state.Sent && len(s.dirty) == 0 && len(s.state.Announcing) == 0 {
		s.closeDrained()
	}
	if !before.Connected {
		s.state.Since = now
		s.log.Info("Speaker connected", "healthy", s.state.Healthy, "announcing", len(s.state.Announcing), "version", s.state.Version, "capabilities", s.state.Capabilities)
		return true
	}
	if before.Healthy != s.state.Healthy {
		s.log.Info("Speaker health changed", "healthy", s.state.Healthy, "problem", s.state.Problem)
		return true
	}
	return failedChanged
}

// recordFlaps counts the BGP sessions that were Established and are not
// now, and the BFD sessions that were Up and are not now.
func (s *session) recordFlaps(now []*speakerv1.BGPSessionStatus) {
	for _, old := range s.state.BGPSessions {
		i := slices.IndexFunc(now, func(n *speakerv1.BGPSessionStatus) bool { return n.GetPeer() == old.GetPeer() })
		if i < 0 {
			continue
		}
		if old.GetState() == "Established" && now[i].GetState() != "Established" {
			bgpFlaps.WithLabelValues(s.node, old.GetPeer()).Inc()
			s.log.Info("BGP session went down", "peer", old.GetPeer(), "state", now[i].GetState(), "lastError", now[i].GetLastError())
		}
		if ob, nb := old.GetBfd(), now[i].GetBfd(); ob != nil && nb != nil && nb.GetFlaps() > ob.GetFlaps() {
			bfdFlaps.WithLabelValues(s.node, old.GetPeer()).Add(float64(nb.GetFlaps() - ob.GetFlaps()))
			s.log.Info("BFD session went down", "peer", old.GetPeer(), "state", nb.GetState(), "reason", nb.GetReason())
		}
	}
}

// recordVIPs takes in the VIP list of a full report; it reports whether
// the failed VIPs changed.
func (s *session) recordVIPs(r *speakerv1.Report) bool {
	s.state.Announcing = nil
	failed := map[string]string{}
	for _, v := range r.GetVips() {
		if a, err := netip.ParseAddr(v.GetAddress()); err == nil && v.GetState() == speakerv1.VIPStatus_ANNOUNCING {
			s.state.Announcing = append(s.state.Announcing, a)
		}
		if v.GetState() == speakerv1.VIPStatus_FAILED {
			failed[v.GetAddress()] = v.GetError()
			if _, known := s.state.Failed[v.GetAddress()]; !known {
				s.log.Error(errors.New(v.GetError()), "Speaker cannot announce VIP", "address", v.GetAddress())
			}
		}
	}
	changed := !maps.Equal(failed, s.state.Failed)
	s.state.Failed = failed
	return changed
}

// health says whether the speaker can announce: it is healthy while its
// default interface works (older speakers mark none: then every interface
// counts).
func health(r *speakerv1.Report) (bool, string) {
	hasDefault := slices.ContainsFunc(r.GetInterfaces(), (*speakerv1.InterfaceStatus).GetDefault)
	for _, i := range r.GetInterfaces() {
		if i.GetError() != "" && (i.GetDefault() || !hasDefault) {
			return false, fmt.Sprintf("interface %q: %s", i.GetName(), i.GetError())
		}
	}
	return true, ""
}

// closeDrained marks a deleted node's speaker as done; m.mu is held.
func (s *session) closeDrained() {
	select {
	case <-s.drained:
	default:
		close(s.drained)
	}
}
