package speaker

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

func termSnapshot(term, v uint64, leader string, addrs ...string) *speakerv1.Instruction {
	in := snapshot(v, addrs...)
	in.GetSnapshot().Term = term
	in.GetSnapshot().Leader = leader
	return in
}

// recvErr reads from s until the stream ends and returns its error.
func recvErr(t *testing.T, s speakerv1.Speaker_SyncClient) error {
	t.Helper()
	for {
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
}

// TestFencing: a speaker follows the highest leader term it has seen. A
// snapshot of a lower term is refused and changes nothing; a higher term
// takes over and ends the streams of lower terms, so a deposed leader
// cannot keep sending.
func TestFencing(t *testing.T) {
	_, fa, c := newTestAgent(t)
	oldLeader, _ := open(t, c)
	r := send(t, oldLeader, termSnapshot(100, 1, "ccm-a", "192.0.2.1"))
	if r.GetTerm() != 100 {
		t.Errorf("report term = %d, want 100", r.GetTerm())
	}

	newLeader, _ := open(t, c)
	send(t, newLeader, termSnapshot(200, 1, "ccm-b", "192.0.2.2"))
	// The old leader's stream is ended by the takeover.
	err := recvErr(t, oldLeader)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `leader "ccm-b" of term 200 took over`) {
		t.Errorf("old leader's stream ended with %v, want FailedPrecondition naming the new leader", err)
	}

	// The deposed leader reconnects and sends its (stale) snapshot.
	again, first := open(t, c)
	if first.GetTerm() != 200 {
		t.Errorf("first report on a new stream says term %d, want 200", first.GetTerm())
	}
	if err := again.Send(termSnapshot(100, 1, "ccm-a", "192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	err = recvErr(t, again)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "term 100 of leader \"ccm-a\" is older than term 200") {
		t.Errorf("stale snapshot: %v, want FailedPrecondition explaining the terms", err)
	}
	if diff := cmp.Diff([]string{"192.0.2.2"}, fa.list()); diff != "" {
		t.Errorf("announced after the stale snapshot (-want +got):\n%s", diff)
	}

	// An update carrying an older term is refused too.
	u := update(2, []string{"192.0.2.3"})
	u.GetUpdate().Term = 150
	if err := newLeader.Send(u); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, newLeader); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("update of an older term: %v, want FailedPrecondition", err)
	}
	if slices.Contains(fa.list(), "192.0.2.3") {
		t.Error("the update of an older term was applied")
	}

	// The same leader reconnecting keeps its term and is accepted.
	back, _ := open(t, c)
	r = send(t, back, termSnapshot(200, 1, "ccm-b", "192.0.2.2", "192.0.2.4"))
	if diff := cmp.Diff([]string{"192.0.2.2=ANNOUNCING", "192.0.2.4=ANNOUNCING"}, vips(r)); diff != "" {
		t.Errorf("reconnected leader's snapshot (-want +got):\n%s", diff)
	}
}

// TestUnknownInstructionsAreIgnored: an instruction of a kind this speaker
// does not know (from a newer CCM) keeps the stream and the state, and the
// answer says it was ignored; reports say what the speaker can do.
func TestUnknownInstructionsAreIgnored(t *testing.T) {
	_, fa, c := newTestAgent(t)
	s, first := open(t, c)
	if diff := cmp.Diff(Capabilities, first.GetCapabilities()); diff != "" {
		t.Errorf("capabilities (-want +got):\n%s", diff)
	}
	if first.GetVersion() == "" {
		t.Error("the first report has no version")
	}
	send(t, s, snapshot(1, "192.0.2.1"))

	future := &speakerv1.Instruction{}
	raw := protowire.AppendTag(nil, 99, protowire.BytesType)
	raw = protowire.AppendBytes(raw, []byte("a message of a later version"))
	future.ProtoReflect().SetUnknown(raw)
	r := send(t, s, future)
	if r.GetIgnoredInstructions() != 1 {
		t.Errorf("ignored_instructions = %d, want 1", r.GetIgnoredInstructions())
	}
	// The stream still works: the next update applies.
	r = send(t, s, update(2, []string{"192.0.2.2"}))
	if r.GetAppliedVersion() != 2 {
		t.Errorf("applied %d after an ignored instruction, want 2", r.GetAppliedVersion())
	}
	if diff := cmp.Diff([]string{"192.0.2.1", "192.0.2.2"}, fa.list()); diff != "" {
		t.Errorf("announced (-want +got):\n%s", diff)
	}
}

// TestRefusesAddressesItMustNotAnnounce: an IPv4-mapped spelling and an
// address one of the node's own interfaces holds are FAILED with the
// reason; the announcer never sees them.
func TestRefusesAddressesItMustNotAnnounce(t *testing.T) {
	own := func() (map[netip.Addr]string, error) {
		return map[netip.Addr]string{netip.MustParseAddr("192.0.2.11"): "eth0"}, nil
	}
	_, fa, c := newTestAgent(t, WithLocalAddresses(own))
	s, _ := open(t, c)
	r := send(t, s, snapshot(1, "192.0.2.7", "::ffff:192.0.2.7", "192.0.2.11"))
	got := map[string]*speakerv1.VIPStatus{}
	for _, v := range r.GetVips() {
		got[v.GetAddress()] = v
	}
	for addr, want := range map[string]string{
		"::ffff:192.0.2.7": "IPv4-mapped",
		"192.0.2.11":       "an address of this node (interface eth0)",
	} {
		if v := got[addr]; v.GetState() != speakerv1.VIPStatus_FAILED || !strings.Contains(v.GetError(), want) {
			t.Errorf("%s = %v, want FAILED mentioning %q", addr, v, want)
		}
	}
	if v := got["192.0.2.7"]; v.GetState() != speakerv1.VIPStatus_ANNOUNCING {
		t.Errorf("192.0.2.7 = %v, want ANNOUNCING", v)
	}
	if diff := cmp.Diff([]string{"192.0.2.7"}, fa.list()); diff != "" {
		t.Errorf("announcer answers for (-want +got):\n%s", diff)
	}
}

// fakeInterfaces is an interface table whose entries tests delete and
// re-create.
type fakeInterfaces struct {
	mu    sync.Mutex
	index map[string]int
}

func (f *fakeInterfaces) lookup(name string) (*net.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.index[name]
	if !ok {
		return nil, errors.New("route ip+net: no such network interface")
	}
	return &net.Interface{Name: name, Index: i, Flags: net.FlagUp, HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}}, nil
}

func (f *fakeInterfaces) set(name string, index int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if index == 0 {
		delete(f.index, name)
	} else {
		f.index[name] = index
	}
}

// TestReopensRecreatedInterface: an interface deleted and re-created under
// the same name (a rebuilt bond or VLAN) gets a new index; the agent opens
// a new announcer on it and announces its VIPs again within a second, and
// the CCM hears of the failure and of the recovery.
func TestReopensRecreatedInterface(t *testing.T) {
	ifs := &fakeInterfaces{index: map[string]int{"bond0": 7}}
	var mu sync.Mutex
	var opened []*fakeAnnouncer
	var indexes []int
	openFn := func(ifi *net.Interface, _ func(Claim)) (Announcer, error) {
		mu.Lock()
		defer mu.Unlock()
		fa := newFakeAnnouncer()
		opened = append(opened, fa)
		indexes = append(indexes, ifi.Index)
		return fa, nil
	}
	agent := NewAgent("node-a", "bond0", openFn, logr.Discard(), WithInterfaceLookup(ifs.lookup), WithLocalAddresses(noLocalAddresses))
	stream, _ := open(t, serve(t, agent))
	s := readReports(t, stream)
	if err := stream.Send(termSnapshot(1, 1, "ccm", "192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	s.waitReport(t, "VIP announced", func(r *speakerv1.Report) bool {
		return slices.Equal(vips(r), []string{"192.0.2.1=ANNOUNCING"})
	})

	ifs.set("bond0", 0) // deleted
	s.waitReport(t, "VIP failed while the interface is gone", func(r *speakerv1.Report) bool {
		return slices.Equal(vips(r), []string{"192.0.2.1=FAILED"})
	})
	if err := agent.Healthy(); err == nil {
		t.Error("Healthy() = nil while the default interface is gone")
	}
	start := time.Now()
	ifs.set("bond0", 12) // re-created
	s.waitReport(t, "VIP announced again", func(r *speakerv1.Report) bool {
		return slices.Equal(vips(r), []string{"192.0.2.1=ANNOUNCING"})
	})
	t.Logf("VIP announced again %s after the interface returned", time.Since(start).Round(time.Millisecond))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("reopened after %s, want about a second", took)
	}
	mu.Lock()
	if len(opened) != 2 || indexes[1] != 12 || !opened[0].closed || !slices.Equal(opened[1].list(), []string{"192.0.2.1"}) {
		t.Errorf("announcers opened on indexes %v; first closed %v; second answers %v; want a second one on index 12 answering the VIP",
			indexes, len(opened) > 0 && opened[0].closed, func() []string {
				if len(opened) > 1 {
					return opened[1].list()
				}
				return nil
			}())
	}
	mu.Unlock()

	// Re-created again while up: the announcer follows the new index.
	ifs.set("bond0", 13)
	s.waitReport(t, "still announced", func(r *speakerv1.Report) bool {
		return slices.Equal(vips(r), []string{"192.0.2.1=ANNOUNCING"})
	})
	waitCond(t, "third announcer opened on index 13", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(indexes) == 3 && indexes[2] == 13 && slices.Equal(opened[2].list(), []string{"192.0.2.1"})
	})
}

// TestLiveFailsWhenWedged: /healthz's check fails when the agent's state
// stays locked (an announcer stuck in a socket call).
func TestLiveFailsWhenWedged(t *testing.T) {
	agent, _, _ := newTestAgent(t)
	if err := agent.Live(t.Context()); err != nil {
		t.Fatalf("Live() = %v on a working agent", err)
	}
	agent.mu.Lock()
	defer agent.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := agent.Live(ctx); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("Live() on a wedged agent = %v, want an error saying its state is locked", err)
	}
}

// reports collects the reports of a stream as they arrive.
type reports struct{ ch chan *speakerv1.Report }

func readReports(t *testing.T, s speakerv1.Speaker_SyncClient) *reports {
	r := &reports{ch: make(chan *speakerv1.Report, 100)}
	go func() {
		for {
			rep, err := s.Recv()
			if err != nil {
				close(r.ch)
				return
			}
			r.ch <- rep
		}
	}()
	return r
}

// waitReport waits for a full report satisfying cond.
func (r *reports) waitReport(t *testing.T, what string, cond func(*speakerv1.Report) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var last *speakerv1.Report
	for {
		select {
		case rep, ok := <-r.ch:
			if !ok {
				t.Fatalf("stream ended waiting for: %s", what)
			}
			if rep.GetFull() {
				last = rep
				if cond(rep) {
					return
				}
			}
		case <-timeout:
			t.Fatalf("after 10s: %s; last report %v", what, vips(last))
		}
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
