package speakers

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// managerCollector collects m's metrics, for a registry of a test's own
// (the Manager's are in the process-wide one, served at /metrics).
type managerCollector struct {
	metrics.BaseStableCollector
	m *Manager
}

func (*managerCollector) DescribeWithStability(ch chan<- *metrics.Desc) {
	for _, d := range []*metrics.Desc{connectedDesc, healthyDesc, lagDesc, bgpUpDesc, bgpRoutesDesc, bfdUpDesc} {
		ch <- d
	}
}

func (c *managerCollector) CollectWithStability(ch chan<- metrics.Metric) { c.m.collectMetrics(ch) }

// newTestSession adds a session for node to m as SetNode does, without
// the goroutine that dials the speaker; its stream is generation 1.
func newTestSession(m *Manager, node string) *session {
	_, cancel := context.WithCancel(m.ctx) // what RemoveNode ends the session with
	s := &session{
		m: m, node: node, addr: netip.MustParseAddr("192.0.2.10"), cancel: cancel, log: logr.Discard(),
		desired: map[string]*speakerv1.Announcement{}, dirty: map[string]bool{},
		wake: make(chan struct{}, 1), drained: make(chan struct{}),
		state: State{Problem: "not connected yet"}, gen: 1,
	}
	m.mu.Lock()
	m.sessions[node] = s
	m.mu.Unlock()
	return s
}

// TestBGPMetricsOfReportedSessions: the BGP metrics show each configured
// peer the speaker reported once. A speaker that reports a peer twice
// (found by FuzzReports) gets its first entry shown, as its flaps are
// counted: a repeated series would fail every scrape of the CCM's
// /metrics.
func TestBGPMetricsOfReportedSessions(t *testing.T) {
	const header = `
# HELP ironlb_bgp_session_up [ALPHA] 1 while the node's BGP session with the peer is Established, as its speaker last reported.
# TYPE ironlb_bgp_session_up gauge
`
	tests := []struct {
		name     string
		sessions []*speakerv1.BGPSessionStatus
		want     string
	}{
		{
			name: "two peers",
			sessions: []*speakerv1.BGPSessionStatus{
				{Peer: "192.0.2.254", State: "Established"}, {Peer: "2001:db8::fe", State: "Active"},
			},
			want: header + `ironlb_bgp_session_up{node="node-a",peer="192.0.2.254"} 1
ironlb_bgp_session_up{node="node-a",peer="2001:db8::fe"} 0
`,
		},
		{
			name: "a peer reported twice",
			sessions: []*speakerv1.BGPSessionStatus{
				{Peer: "192.0.2.254", State: "Established", Bfd: &speakerv1.BFDStatus{State: "Up"}},
				{Peer: "192.0.2.254", State: "Idle", Bfd: &speakerv1.BFDStatus{State: "Down"}},
				{Peer: "2001:db8::fe", State: "Active"},
				{Peer: "192.0.2.254", State: "Connect"},
			},
			want: header + `ironlb_bgp_session_up{node="node-a",peer="192.0.2.254"} 1
ironlb_bgp_session_up{node="node-a",peer="2001:db8::fe"} 0
`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logr.Discard()))
			defer cancel()
			m := New(ctx, Options{})
			s := newTestSession(m, "node-a")
			s.setPeers(&speakerv1.BGPConfig{Peers: []*speakerv1.BGPPeer{{Address: "192.0.2.254"}, {Address: "2001:db8::fe"}}})
			s.record(1, &speakerv1.Report{Full: true, BgpSessions: tc.sessions})
			reg := metrics.NewKubeRegistry()
			reg.CustomMustRegister(&managerCollector{m: m})
			// Every metric, to catch a repeated series in any of them.
			if _, err := reg.Gather(); err != nil {
				t.Fatalf("gathering the metrics (as /metrics does): %v", err)
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tc.want), "ironlb_bgp_session_up"); err != nil {
				t.Error(err)
			}
		})
	}
}
