package bgppeers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

	// A problem of the peer itself (its Secret) makes it not Ready.
	st = Status(p, []string{"a"}, nil, []Problem{{Peer: "tor", Reason: ReasonSecretMissing, Message: "password Secret x not found"}}, now)
	c := meta.FindStatusCondition(st.Conditions, "Ready")
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != string(ReasonSecretMissing) || c.Message != "password Secret x not found" {
		t.Errorf("Ready %+v, want False/SecretMissing", c)
	}
	if st.Sessions[0].LastError != "password Secret x not found" || st.Summary != "Established 0/1" {
		t.Errorf("status %+v", st)
	}
}
