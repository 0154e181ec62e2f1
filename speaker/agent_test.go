package speaker

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

type fakeAnnouncer struct {
	mu     sync.Mutex
	addrs  map[netip.Addr]bool
	fail   map[netip.Addr]error
	closed bool

	// inUse are the addresses other hosts answer probes for.
	inUse     map[netip.Addr]net.HardwareAddr
	probes    [][]netip.Addr // every Probe call's addresses
	withdrawn int            // Withdraw calls
	onClaim   func(Claim)
	// block, when set, makes Announce wait until it is closed (after
	// sending on blocked).
	block   chan struct{}
	blocked chan struct{}
}

func (f *fakeAnnouncer) Probe(_ context.Context, addrs []netip.Addr) (map[netip.Addr]Claim, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes = append(f.probes, slices.Clone(addrs))
	out := map[netip.Addr]Claim{}
	for _, a := range addrs {
		if mac, ok := f.inUse[a]; ok {
			out[a] = Claim{Addr: a, MAC: mac, Kind: "arp-reply", At: time.Now()}
		}
	}
	return out, nil
}

// claim delivers another host's claim, as the responder's receiving
// goroutine would.
func (f *fakeAnnouncer) claim(addr string, mac net.HardwareAddr) {
	f.mu.Lock()
	fn := f.onClaim
	f.mu.Unlock()
	fn(Claim{Addr: netip.MustParseAddr(addr), MAC: mac, Kind: "arp-request", At: time.Now()})
}

func (f *fakeAnnouncer) probeCalls() [][]netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.probes)
}

// factory opens f on any interface.
func (f *fakeAnnouncer) factory(_ *net.Interface, onClaim func(Claim)) (Announcer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onClaim = onClaim
	return f, nil
}

func newFakeAnnouncer() *fakeAnnouncer {
	return &fakeAnnouncer{addrs: map[netip.Addr]bool{}, fail: map[netip.Addr]error{}, inUse: map[netip.Addr]net.HardwareAddr{}}
}

func (f *fakeAnnouncer) Announce(a netip.Addr) error {
	f.mu.Lock()
	block, blocked := f.block, f.blocked
	f.mu.Unlock()
	if block != nil {
		select {
		case blocked <- struct{}{}:
		default:
		}
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[a]; err != nil {
		return err
	}
	f.addrs[a] = true
	return nil
}

func (f *fakeAnnouncer) Withdraw(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.withdrawn++
	delete(f.addrs, a)
	return nil
}

func (f *fakeAnnouncer) Err() error { return nil }

func (f *fakeAnnouncer) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeAnnouncer) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a := range f.addrs {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}

// noLocalAddresses stands for a node none of whose addresses is a test VIP.
func noLocalAddresses() (map[netip.Addr]string, error) { return map[netip.Addr]string{}, nil }

// The agent announces on "lo", which every test machine has; its Run loop
// runs until the test ends.
func newTestAgent(t testing.TB, opts ...Option) (*Agent, *fakeAnnouncer, speakerv1.SpeakerClient) {
	t.Helper()
	fa := newFakeAnnouncer()
	opts = append([]Option{WithLocalAddresses(noLocalAddresses)}, opts...)
	agent := NewAgent("node-a", "lo", fa.factory, logr.Discard(), opts...)
	return agent, fa, serve(t, agent)
}

// serve runs agent (its Run loop and a gRPC server on loopback) until the
// test ends and returns a client of it.
func serve(t testing.TB, agent *Agent) speakerv1.SpeakerClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go agent.Run(ctx)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	speakerv1.RegisterSpeakerServer(srv, agent)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	checkChangesLogged(t, agent)
	return speakerv1.NewSpeakerClient(conn)
}

// checkChangesLogged fails t if a change of what a report says of a VIP
// did not reach the agent's change log (vipChangedLocked), so that a
// stream taking VIP changes would never be told of it. A stream of the
// test's own that takes VIP changes follows the log about every
// millisecond, and checks before each step that nothing changed beyond
// what was logged; the agent's open streams are checked when t ends.
func checkChangesLogged(t testing.TB, agent *Agent) {
	t.Helper()
	shadow := &streamState{deltas: true}
	var missed []netip.Addr
	step := func() { // agent.mu is held
		if m := agent.unloggedLocked(shadow); len(m) > 0 {
			missed = append(missed, m...)
			agent.compareAllLocked(shadow) // each miss once
		}
		agent.vipsLocked(shadow)
	}
	agent.mu.Lock()
	step()
	agent.mu.Unlock()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				agent.mu.Lock()
				step()
				agent.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { // before the streams close: cleanups run last first
		close(stop)
		<-done
		agent.mu.Lock()
		defer agent.mu.Unlock()
		step()
		if len(missed) > 0 {
			t.Errorf("changes of VIPs %v were not logged", missed)
		}
		for id, s := range agent.streams {
			if m := agent.unloggedLocked(s); len(m) > 0 {
				t.Errorf("stream %d: changes of VIPs %v were not logged", id, m)
			}
		}
	})
}

func open(t testing.TB, c speakerv1.SpeakerClient) (speakerv1.Speaker_SyncClient, *speakerv1.Report) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	s, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return s, first
}

func snapshot(v uint64, addrs ...string) *speakerv1.Instruction {
	s := &speakerv1.Snapshot{Version: v, Leader: "test"}
	for _, a := range addrs {
		s.Announcements = append(s.Announcements, &speakerv1.Announcement{Address: a, Service: "ns/svc"})
	}
	return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: s}}
}

func update(v uint64, announce []string, withdraw ...string) *speakerv1.Instruction {
	u := &speakerv1.Update{Version: v, Withdraw: withdraw}
	for _, a := range announce {
		u.Announce = append(u.Announce, &speakerv1.Announcement{Address: a})
	}
	return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: u}}
}

// send sends in and returns its answer: the next full report or
// heartbeat answer, and for a snapshot or update the first full report
// that applied its version (a report of the speaker's own change may come
// first, built while the instruction was being applied).
func send(t testing.TB, s speakerv1.Speaker_SyncClient, in *speakerv1.Instruction) *speakerv1.Report {
	t.Helper()
	if err := s.Send(in); err != nil {
		t.Fatal(err)
	}
	version := in.GetSnapshot().GetVersion() + in.GetUpdate().GetVersion()
	for {
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetHeartbeatSeq() != 0 || r.GetFull() && r.GetAppliedVersion() >= version {
			return r
		}
	}
}

func vips(r *speakerv1.Report) []string {
	var out []string
	for _, v := range r.GetVips() {
		out = append(out, v.GetAddress()+"="+v.GetState().String())
	}
	return out
}

func TestSnapshotAndUpdates(t *testing.T) {
	agent, fa, c := newTestAgent(t)
	s, first := open(t, c)
	if first.GetNode() != "node-a" || !first.GetFull() || len(first.GetVips()) != 0 || first.GetAppliedVersion() != 0 {
		t.Fatalf("first report = %v, want node-a, full, empty, version 0", first)
	}
	r := send(t, s, snapshot(1, "192.0.2.1", "2001:db8::1"))
	if diff := cmp.Diff([]string{"192.0.2.1=ANNOUNCING", "2001:db8::1=ANNOUNCING"}, vips(r)); diff != "" {
		t.Errorf("report after snapshot (-want +got):\n%s", diff)
	}
	if r.GetAppliedVersion() != 1 {
		t.Errorf("applied %d, want 1", r.GetAppliedVersion())
	}
	r = send(t, s, update(2, []string{"192.0.2.2"}, "192.0.2.1"))
	if diff := cmp.Diff([]string{"192.0.2.2", "2001:db8::1"}, fa.list()); diff != "" {
		t.Errorf("announced after update (-want +got):\n%s", diff)
	}
	if r.GetAppliedVersion() != 2 {
		t.Errorf("applied %d, want 2", r.GetAppliedVersion())
	}
	// Heartbeats are answered with the applied version.
	hb := send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Heartbeat{Heartbeat: &speakerv1.Heartbeat{Seq: 7}}})
	if hb.GetHeartbeatSeq() != 7 || hb.GetAppliedVersion() != 2 {
		t.Errorf("heartbeat answer = %v", hb)
	}
	// A snapshot withdraws what it does not list.
	send(t, s, snapshot(3, "2001:db8::1"))
	if diff := cmp.Diff([]string{"2001:db8::1"}, fa.list()); diff != "" {
		t.Errorf("after second snapshot (-want +got):\n%s", diff)
	}
	// A gap in versions ends the stream; nothing is applied.
	if err := s.Send(update(5, []string{"192.0.2.9"})); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := s.Recv()
		if err != nil {
			if !strings.Contains(err.Error(), "does not follow applied version 3") {
				t.Errorf("error = %v, want a version gap error", err)
			}
			break
		}
	}
	if slices.Contains(fa.list(), "192.0.2.9") {
		t.Error("update after a gap applied")
	}
	// The CCM went away: the agent keeps announcing.
	if got := agent.Addresses(); len(got) != 1 {
		t.Errorf("after stream end: %v, want the VIP kept", got)
	}
}

func TestNewStreamTakesOver(t *testing.T) {
	agent, fa, c := newTestAgent(t)
	old, _ := open(t, c)
	send(t, old, snapshot(1, "192.0.2.1"))
	// A new leader connects: its first report shows the current VIPs.
	cur, first := open(t, c)
	if diff := cmp.Diff([]string{"192.0.2.1=ANNOUNCING"}, vips(first)); diff != "" {
		t.Errorf("new stream's first report (-want +got):\n%s", diff)
	}
	if first.GetAppliedVersion() != 0 {
		t.Errorf("new stream sees applied version %d, want 0 (versions are per stream)", first.GetAppliedVersion())
	}
	send(t, cur, snapshot(1, "192.0.2.2"))
	// The old leader's update is refused.
	if err := old.Send(update(2, []string{"192.0.2.3"})); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := old.Recv(); err != nil {
			if !strings.Contains(err.Error(), "another CCM has taken over") {
				t.Errorf("old stream error = %v", err)
			}
			break
		}
	}
	if diff := cmp.Diff([]string{"192.0.2.2"}, fa.list()); diff != "" {
		t.Errorf("announced (-want +got):\n%s", diff)
	}
	// Close withdraws everything and closes the announcers.
	if err := agent.Close(); err != nil {
		t.Fatal(err)
	}
	if len(fa.list()) != 0 || !fa.closed {
		t.Errorf("after Close: announced %v, closed %v", fa.list(), fa.closed)
	}
}

func TestFailuresAreReported(t *testing.T) {
	agent, fa, c := newTestAgent(t)
	fa.fail[netip.MustParseAddr("192.0.2.66")] = errors.New("boom")
	s, _ := open(t, c)
	r := send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: &speakerv1.Snapshot{
		Version: 1,
		Announcements: []*speakerv1.Announcement{
			{Address: "192.0.2.66"},
			{Address: "not-an-ip"},
			{Address: "192.0.2.1", Interfaces: []string{"no-such-ifc0"}},
		},
	}}})
	got := map[string]*speakerv1.VIPStatus{}
	for _, v := range r.GetVips() {
		got[v.GetAddress()] = v
	}
	if v := got["192.0.2.66"]; v == nil || v.GetState() != speakerv1.VIPStatus_FAILED || !strings.Contains(v.GetError(), "boom") {
		t.Errorf("192.0.2.66 = %v, want FAILED with the announcer's error", v)
	}
	if v := got["192.0.2.1"]; v == nil || v.GetState() != speakerv1.VIPStatus_FAILED || !strings.Contains(v.GetError(), "no-such-ifc0") {
		t.Errorf("192.0.2.1 = %v, want FAILED naming the interface", v)
	}
	if _, ok := got["not-an-ip"]; ok {
		t.Error("a bad address was accepted")
	}
	var bad *speakerv1.InterfaceStatus
	for _, i := range r.GetInterfaces() {
		if i.GetName() == "no-such-ifc0" {
			bad = i
		}
	}
	if bad == nil || bad.GetError() == "" {
		t.Errorf("interfaces = %v, want no-such-ifc0 reported with an error", r.GetInterfaces())
	}
	// Only the VIPs on the broken interface fail; the speaker stays healthy.
	if err := agent.Healthy(); err != nil {
		t.Errorf("Healthy() = %v, want nil: the default interface works", err)
	}
	// Once no VIP wants the broken interface, it is no longer reported.
	r = send(t, s, snapshot(2, "192.0.2.1"))
	for _, i := range r.GetInterfaces() {
		if i.GetName() == "no-such-ifc0" {
			t.Errorf("interface still reported after its VIP moved: %v", i)
		}
		if i.GetName() == "lo" && !i.GetDefault() {
			t.Errorf("lo not marked default: %v", i)
		}
	}
	broken := NewAgent("node-b", "no-such-ifc1", nil, logr.Discard(), WithLocalAddresses(noLocalAddresses))
	if err := broken.Healthy(); err == nil || !strings.Contains(err.Error(), "no-such-ifc1") {
		t.Errorf("Healthy() with a missing default interface = %v", err)
	}
}

func TestInterfaceFor(t *testing.T) {
	name, err := InterfaceFor(netip.MustParseAddr("127.0.0.1"))
	if err != nil || name == "" {
		t.Fatalf("InterfaceFor(127.0.0.1) = %q, %v", name, err)
	}
	if _, err := InterfaceFor(netip.MustParseAddr("203.0.113.254")); err == nil {
		t.Error("want an error for an address no interface holds")
	}
}

// TestIdleStreamSendsNoReports: interface health is re-read twice a
// second, but a report goes out only when it changed.
func TestIdleStreamSendsNoReports(t *testing.T) {
	agent, _, c := newTestAgent(t)
	s, _ := open(t, c)
	got := make(chan *speakerv1.Report, 10)
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				return
			}
			got <- r
		}
	}()
	// The signal: the maintenance loop made three more passes, each of
	// which would have reported a change.
	agent.waitPasses(t, 3)
	select {
	case r := <-got:
		t.Fatalf("idle stream got a report: %v", r)
	default:
	}
}

// waitPasses waits until Run made n more passes.
func (a *Agent) waitPasses(t *testing.T, n int) {
	t.Helper()
	a.mu.Lock()
	last := a.lastTick
	a.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for n > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the agent's Run loop made no pass for 10s")
		}
		a.mu.Lock()
		cur := a.lastTick
		a.mu.Unlock()
		if cur.After(last) {
			last = cur
			n--
			continue
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHTTPHandler: by default the plain-HTTP port answers the kubelet's
// probes and Prometheus, and nothing that tells where VIPs are or how BGP
// is set up; WithDebugEndpoints adds /announcements and /bgp.
func TestHTTPHandler(t *testing.T) {
	agent, _, c := newTestAgent(t)
	s, _ := open(t, c)
	send(t, s, snapshot(1, "192.0.2.1"))
	for _, tc := range []struct {
		name string
		opts []HTTPOption
		want map[string]int // path → status
	}{
		{"default", nil, map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/announcements": 404, "/bgp": 404}},
		{"debug endpoints", []HTTPOption{WithDebugEndpoints()}, map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/announcements": 200, "/bgp": 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(agent.HTTPHandler(tc.opts...))
			defer srv.Close()
			got := map[string]int{}
			bodies := map[string]string{}
			for path := range tc.want {
				resp, err := http.Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got[path], bodies[path] = resp.StatusCode, strings.TrimSpace(string(b))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("status per path (-want +got):\n%s", diff)
			}
			if b := bodies["/healthz"]; b != "ok" {
				t.Errorf("/healthz: %q", b)
			}
			if b := bodies["/metrics"]; !strings.Contains(b, `ironlb_speaker_announced_vips{state="announcing"} 1`) {
				t.Errorf("/metrics lacks the announced VIP count:\n%s", b)
			}
			if got["/announcements"] == 200 && bodies["/announcements"] != `["192.0.2.1"]` {
				t.Errorf("/announcements: %q", bodies["/announcements"])
			}
		})
	}
}
