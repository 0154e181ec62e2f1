package bgppeers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
)

func TestStatus(t *testing.T) {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	p := peer("tor", "192.0.2.1")
	p.Generation = 3
	since := now.Add(-time.Minute)
	sessions := NodeSessions{
		"a": {Peer: "192.0.2.1", State: "Established", Advertised: 4, SinceUnixMs: since.UnixMilli()},
		"b": {Peer: "192.0.2.1", State: "Active", LastError: "no answer from 192.0.2.1: ..."},
	}
	problems := []Problem{{Peer: "tor", Node: "c", Reason: ReasonRouterID, Message: "node c has no IPv4 InternalIP"}}
	st := Status(p, []string{"c", "b", "a"}, sessions, problems, now)
	sinceT := metav1.NewTime(since)
	want := []v1alpha1.BGPSession{
		{Node: "a", State: "Established", AdvertisedRoutes: 4, Since: &sinceT},
		{Node: "b", State: "Active", LastError: "no answer from 192.0.2.1: ..."},
		{Node: "c", State: "Unknown", LastError: "node c has no IPv4 InternalIP"},
	}
	if diff := cmp.Diff(want, st.Sessions); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}
	if st.Summary != "Established 1/3" || st.ObservedGeneration != 3 {
		t.Errorf("summary %q generation %d", st.Summary, st.ObservedGeneration)
	}
	if c := meta.FindStatusCondition(st.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready %+v, want True", c)
	}

	// A problem of the peer itself (its Secret) makes it not Ready; its
	// detail is for the log only.
	st = Status(p, []string{"a"}, nil, []Problem{{Peer: "tor", Reason: ReasonPasswordSecret, Message: "password Secret x is not usable", Detail: "no Secret x"}}, now)
	c := meta.FindStatusCondition(st.Conditions, "Ready")
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != string(ReasonPasswordSecret) || c.Message != "password Secret x is not usable" {
		t.Errorf("Ready %+v, want False/PasswordSecretNotUsable", c)
	}
	if st.Sessions[0].LastError != "password Secret x is not usable" || st.Summary != "Established 0/1" {
		t.Errorf("status %+v", st)
	}
	if strings.Contains(fmt.Sprintf("%+v", st), "no Secret x") {
		t.Errorf("the problem's detail is in the status: %+v", st)
	}
}

// TestStatusBFD: with BFD on, each session shows its BFD state and the
// summary counts the Up ones; with BFD off, a stale BFD report is not
// shown.
func TestStatusBFD(t *testing.T) {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	p := peer("tor", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) { s.BFD = &v1alpha1.BGPPeerBFD{Enabled: true} })
	since := now.Add(-time.Minute)
	sessions := NodeSessions{
		"a": {Peer: "192.0.2.1", State: "Established", Bfd: &speakerv1.BFDStatus{State: "Up", SinceUnixMs: since.UnixMilli(), TransmitIntervalMs: 300, DetectTimeMs: 900, Flaps: 2}},
		"b": {Peer: "192.0.2.1", State: "Established", Bfd: &speakerv1.BFDStatus{State: "Down", Reason: "no BFD packet from the peer yet"}},
	}
	st := Status(p, []string{"a", "b"}, sessions, nil, now)
	sinceT := metav1.NewTime(since)
	want := []v1alpha1.BGPSession{
		{Node: "a", State: "Established", BFD: &v1alpha1.BFDSession{State: "Up", Since: &sinceT, Flaps: 2,
			TransmitInterval: &metav1.Duration{Duration: 300 * time.Millisecond}, DetectTime: &metav1.Duration{Duration: 900 * time.Millisecond}}},
		{Node: "b", State: "Established", BFD: &v1alpha1.BFDSession{State: "Down", Reason: "no BFD packet from the peer yet"}},
	}
	if diff := cmp.Diff(want, st.Sessions); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}
	if st.Summary != "Established 2/2, BFD Up 1/2" {
		t.Errorf("summary %q", st.Summary)
	}
	p.Spec.BFD.Enabled = false
	st = Status(p, []string{"a", "b"}, sessions, nil, now)
	if st.Sessions[0].BFD != nil || st.Summary != "Established 2/2" {
		t.Errorf("BFD off: sessions %+v summary %q", st.Sessions, st.Summary)
	}
}
