package speakers

import (
	"testing"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestRecordFlaps: a BGP session counts a flap when it leaves
// Established; a BFD session counts the flaps its speaker counted since
// the last report (none when the speaker restarted and counts from 0).
func TestRecordFlaps(t *testing.T) {
	managerMetrics.Set(func(chan<- metrics.Metric) {}) // registers the counters
	bgp := func(state string, bfdState string, flaps uint64) []*speakerv1.BGPSessionStatus {
		st := &speakerv1.BGPSessionStatus{Peer: "192.0.2.1", State: state}
		if bfdState != "" {
			st.Bfd = &speakerv1.BFDStatus{State: bfdState, Flaps: flaps}
		}
		return []*speakerv1.BGPSessionStatus{st}
	}
	tests := []struct {
		name             string
		before, after    []*speakerv1.BGPSessionStatus
		wantBGP, wantBFD float64
	}{
		{"nothing changed", bgp("Established", "Up", 1), bgp("Established", "Up", 1), 0, 0},
		{"BGP went down", bgp("Established", "", 0), bgp("Active", "", 0), 1, 0},
		{"BGP was down already", bgp("Active", "", 0), bgp("Idle", "", 0), 0, 0},
		{"BFD went down, BGP with it", bgp("Established", "Up", 1), bgp("Idle", "Down", 2), 1, 1},
		{"two BFD flaps between reports", bgp("Established", "Up", 1), bgp("Established", "Up", 3), 0, 2},
		{"the speaker restarted: its count starts again", bgp("Established", "Up", 5), bgp("Established", "Up", 0), 0, 0},
		{"BFD turned on", bgp("Established", "", 0), bgp("Established", "Down", 0), 0, 0},
		{"a new peer", nil, bgp("Established", "Up", 0), 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := "node-" + tc.name
			s := &session{node: node, log: klog.Background(), state: State{BGPSessions: tc.before}}
			_ = s.recordFlaps(tc.after)
			gotBGP, err := testutil.GetCounterMetricValue(bgpFlaps.WithLabelValues(node, "192.0.2.1"))
			if err != nil {
				t.Fatal(err)
			}
			gotBFD, err := testutil.GetCounterMetricValue(bfdFlaps.WithLabelValues(node, "192.0.2.1"))
			if err != nil {
				t.Fatal(err)
			}
			if gotBGP != tc.wantBGP || gotBFD != tc.wantBFD {
				t.Errorf("BGP flaps %v, BFD flaps %v; want %v, %v", gotBGP, gotBFD, tc.wantBGP, tc.wantBFD)
			}
		})
	}
}
