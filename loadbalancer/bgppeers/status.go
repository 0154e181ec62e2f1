package bgppeers

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
)

// NodeSessions is what one selected node's speaker said of its session
// with a peer: nil when it has not reported one (yet).
type NodeSessions map[string]*speakerv1.BGPSessionStatus

// Status computes a BGPPeer's status: one session per selected node (a
// node whose speaker reported none is Unknown, with the node's problem as
// its last error), the summary "Established n/m" (and "BFD Up k/m" when
// BFD is on), and Ready=False with
// the reason when the peer itself cannot be used.
func Status(p *v1alpha1.BGPPeer, selected []string, sessions NodeSessions, problems []Problem, now time.Time) v1alpha1.BGPPeerStatus {
	st := v1alpha1.BGPPeerStatus{ObservedGeneration: p.Generation, Conditions: slices.Clone(p.Status.Conditions)}
	nodes := slices.Sorted(slices.Values(selected))
	up, bfdUp := 0, 0
	bfdOn := p.Spec.BFD != nil && p.Spec.BFD.Enabled
	for _, n := range nodes {
		s := v1alpha1.BGPSession{Node: n, State: v1alpha1.SessionUnknown}
		if r := sessions[n]; r != nil {
			s.State = r.GetState()
			s.LastError = r.GetLastError()
			s.AdvertisedRoutes = int32(min(r.GetAdvertised(), 1<<31-1))
			if ms := r.GetSinceUnixMs(); ms > 0 {
				t := metav1.NewTime(time.UnixMilli(ms).UTC())
				s.Since = &t
			}
			if b := r.GetBfd(); b != nil && bfdOn {
				s.BFD = bfdSession(b)
			}
		}
		for _, prob := range problems {
			if prob.Peer == p.Name && (prob.Node == "" || prob.Node == n) && s.LastError == "" {
				s.LastError = prob.Message
			}
		}
		if s.State == v1alpha1.SessionEstablished {
			up++
		}
		if s.BFD != nil && s.BFD.State == v1alpha1.BFDUp {
			bfdUp++
		}
		st.Sessions = append(st.Sessions, s)
	}
	st.Summary = fmt.Sprintf("Established %d/%d", up, len(nodes))
	if bfdOn {
		st.Summary += fmt.Sprintf(", BFD Up %d/%d", bfdUp, len(nodes))
	}
	cond := metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Valid", ObservedGeneration: p.Generation,
		Message: "the peer is usable; see sessions for each node"}
	var msgs []string
	var reason Reason
	for _, prob := range problems {
		if prob.Peer == p.Name && prob.Node == "" {
			msgs = append(msgs, prob.Message)
			reason = prob.Reason
		}
	}
	if len(msgs) > 0 {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, string(reason), strings.Join(msgs, "; ")
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	if c := meta.FindStatusCondition(st.Conditions, "Ready"); c != nil && c.LastTransitionTime.IsZero() {
		c.LastTransitionTime = metav1.NewTime(now)
	}
	return st
}

// bfdSession is a speaker's BFD report as the status shows it.
func bfdSession(b *speakerv1.BFDStatus) *v1alpha1.BFDSession {
	s := &v1alpha1.BFDSession{State: b.GetState(), Reason: b.GetReason(), Flaps: int64(min(b.GetFlaps(), 1<<63-1))}
	if ms := b.GetSinceUnixMs(); ms > 0 {
		t := metav1.NewTime(time.UnixMilli(ms).UTC())
		s.Since = &t
	}
	if ms := b.GetTransmitIntervalMs(); ms > 0 {
		s.TransmitInterval = &metav1.Duration{Duration: time.Duration(ms) * time.Millisecond}
	}
	if ms := b.GetDetectTimeMs(); ms > 0 {
		s.DetectTime = &metav1.Duration{Duration: time.Duration(ms) * time.Millisecond}
	}
	return s
}
