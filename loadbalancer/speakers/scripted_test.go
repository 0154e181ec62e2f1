package speakers

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/component-base/metrics/testutil"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/speaker"
)

// scriptedSpeaker is a speaker whose node key was stolen: it enrolls as a
// real speaker does, then opens each stream with first's report and sends
// the reports next gives, in turn across its streams, as fast as the CCM
// reads them. Once next gives none (nil) it answers heartbeats, as a real
// speaker does, with reports that are not full, until halted.
type scriptedSpeaker struct {
	speakerv1.UnimplementedSpeakerServer
	agent *speaker.Agent // enrolls
	creds *pki.NodeCredentials
	node  string
	first func() *speakerv1.Report
	next  func() *speakerv1.Report
	caps  []string // reported on heartbeat answers; nil: layer2 and fencing

	stop    chan struct{}
	once    sync.Once
	sent    atomic.Int64 // reports of next sent
	streams atomic.Int64 // streams opened after enrollment
}

func (s *scriptedSpeaker) halt() { s.once.Do(func() { close(s.stop) }) }

func (s *scriptedSpeaker) Sync(stream speakerv1.Speaker_SyncServer) error {
	if ok, _ := s.creds.Enrolled(); !ok {
		return s.agent.Sync(stream)
	}
	s.streams.Add(1)
	heartbeats := make(chan uint64, 64)
	go func() { // read the instructions, so that the CCM's sends never block
		for {
			in, err := stream.Recv()
			if err != nil {
				return
			}
			if hb := in.GetHeartbeat(); hb != nil {
				select {
				case heartbeats <- hb.GetSeq():
				default:
				}
			}
		}
	}()
	if err := stream.Send(s.first()); err != nil {
		return err
	}
	for {
		if r := s.next(); r != nil {
			if err := stream.Send(r); err != nil {
				return err
			}
			s.sent.Add(1)
			continue
		}
		select {
		case <-s.stop:
			<-stream.Context().Done()
			return nil
		case <-stream.Context().Done():
			return nil
		case seq := <-heartbeats:
			r := s.report(false)
			r.HeartbeatSeq = seq
			if err := stream.Send(r); err != nil {
				return err
			}
		}
	}
}

// report is a report of a speaker that works: full or not, nothing else
// set.
func (s *scriptedSpeaker) report(full bool) *speakerv1.Report {
	caps := s.caps
	if caps == nil {
		caps = []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing}
	}
	r := &speakerv1.Report{Node: s.node, Version: "v0.0.0", Capabilities: caps}
	if full {
		r.Full = true
		r.Interfaces = []*speakerv1.InterfaceStatus{{Name: "eth0", Up: true, Default: true}}
	}
	return r
}

// startScripted starts node's scripted speaker, reporting caps on its
// heartbeat answers (none: layer2 and fencing); halted at the end of the
// test.
func (e *env) startScripted(node string, first, next func() *speakerv1.Report, caps ...string) *scriptedSpeaker {
	e.t.Helper()
	s := &scriptedSpeaker{node: node, first: first, next: next, caps: caps, stop: make(chan struct{})}
	s.agent, s.creds = e.startStolen(node, s)
	e.t.Cleanup(s.halt)
	return s
}

// ignoredItems is node's ironlb_speaker_report_items_ignored_total{reason=why}.
func ignoredItems(node string, why ignoreReason) int64 {
	v, _ := testutil.GetCounterMetricValue(reportItemsIgnored.WithLabelValues(node, string(why)))
	return int64(v)
}

// moveHonest is step i of moving the honest speaker's VIP among vips
// (i ≥ 1): the speaker withdraws the VIP of step i-1 and takes that of
// step i; it fails t unless the speaker confirms both within 20s.
func moveHonest(t *testing.T, m *Manager, honest *testSpeaker, vips []netip.Addr, i int) {
	t.Helper()
	old, a := vips[(i-1)%len(vips)], vips[i%len(vips)]
	m.Unassign("node-a", old.String())
	m.Assign("node-a", ann(a.String()))
	waitFor(t, "the honest speaker moved from "+old.String()+" to "+a.String(), 20*time.Second, func() bool {
		st, _ := m.State("node-a")
		has := honest.agent.Addresses()
		return st.Applied == st.Sent && slices.Contains(has, a) && !slices.Contains(has, old)
	})
}
