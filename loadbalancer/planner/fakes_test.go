package planner

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/ipam/ippool"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// fakeSpeakers records assignments; tests set each node's state.
type fakeSpeakers struct {
	mu       sync.Mutex
	addrs    map[string]netip.Addr
	states   map[string]speakers.State
	assigned map[string]map[string]bool
	anns     map[string]map[string]*speakerv1.Announcement // node → address → last announcement
	resent   map[string]map[string]int                     // node → address → Resend calls
	bgp      map[string]*speakerv1.BGPConfig               // node → last BGP set-up (SetBGP)
	onChange []func(string)
}

func newFakeSpeakers() *fakeSpeakers {
	return &fakeSpeakers{addrs: map[string]netip.Addr{}, states: map[string]speakers.State{}, assigned: map[string]map[string]bool{},
		anns: map[string]map[string]*speakerv1.Announcement{}, resent: map[string]map[string]int{}}
}

func up() speakers.State {
	now := time.Now()
	return speakers.State{Connected: true, Healthy: true, Reported: true, Since: now, LastReport: now,
		Capabilities: []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing}}
}

func lost() speakers.State {
	return speakers.State{Reported: true, Since: time.Now(), Problem: "stream broke"}
}

func (f *fakeSpeakers) SetNode(node string, addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[node] = addr
	if _, ok := f.states[node]; !ok {
		f.states[node] = up()
	}
}
func (f *fakeSpeakers) RemoveNode(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, node)
	delete(f.assigned, node)
}
func (f *fakeSpeakers) Nodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.addrs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
func (f *fakeSpeakers) View(node string) (speakers.State, bool) { return f.State(node) }

func (f *fakeSpeakers) State(node string) (speakers.State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.addrs[node]; !ok {
		return speakers.State{}, false
	}
	st := f.states[node]
	if st.Connected {
		st.LastReport = time.Now() // a connected fake speaker answers every heartbeat
	}
	return st, true
}
func (f *fakeSpeakers) Assign(node string, a *speakerv1.Announcement) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.assigned[node] == nil {
		f.assigned[node] = map[string]bool{}
	}
	f.assigned[node][a.GetAddress()] = true
	if f.anns[node] == nil {
		f.anns[node] = map[string]*speakerv1.Announcement{}
	}
	f.anns[node][a.GetAddress()] = a
}

// announcement returns what node was last told about addr.
func (f *fakeSpeakers) announcement(node, addr string) *speakerv1.Announcement {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.anns[node][addr]
}
func (f *fakeSpeakers) SetBGP(node string, cfg *speakerv1.BGPConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bgp == nil {
		f.bgp = map[string]*speakerv1.BGPConfig{}
	}
	f.bgp[node] = cfg
}

// bgpConfig returns node's last BGP set-up and whether it was given one.
func (f *fakeSpeakers) bgpConfig(node string) (*speakerv1.BGPConfig, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cfg, ok := f.bgp[node]
	return cfg, ok
}

func (f *fakeSpeakers) Unassign(node, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.assigned[node], addr)
}
func (f *fakeSpeakers) Resend(node, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resent[node] == nil {
		f.resent[node] = map[string]int{}
	}
	f.resent[node][addr]++
}

// resends returns how often node was sent its announcement of addr again.
func (f *fakeSpeakers) resends(node, addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resent[node][addr]
}
func (f *fakeSpeakers) SetReady() {}
func (f *fakeSpeakers) OnChange(fn func(string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onChange = append(f.onChange, fn)
}
func (f *fakeSpeakers) LossLimit() time.Duration { return time.Second }
func (f *fakeSpeakers) Heartbeat() time.Duration { return 200 * time.Millisecond }

// set changes a node's speaker state and tells the planner.
func (f *fakeSpeakers) set(node string, st speakers.State) {
	f.mu.Lock()
	f.states[node] = st
	fns := slices.Clone(f.onChange)
	f.mu.Unlock()
	for _, fn := range fns {
		fn(node)
	}
}

// told returns, per node, the addresses it was told to announce.
func (f *fakeSpeakers) told() map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for n, m := range f.assigned {
		for a, ok := range m {
			if ok {
				out[n] = append(out[n], a)
			}
		}
		slices.Sort(out[n])
	}
	return out
}

// holders returns the nodes told to announce addr.
func (f *fakeSpeakers) holders(addr string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n, m := range f.assigned {
		if m[addr] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// fakePools holds layer-2 settings per pool; deleting one tells the
// planner as the IPPool controller does.
type fakePools struct {
	mu       sync.Mutex
	l2       map[string]ippool.Layer2
	bgp      map[string]ippool.BGP
	onChange []func(string)
}

func newFakePools(l2 map[string]ippool.Layer2) *fakePools {
	if l2 == nil {
		l2 = map[string]ippool.Layer2{"lan": ippool.AnyNode}
	}
	return &fakePools{l2: l2}
}

func (p *fakePools) Layer2(pool string) (ippool.Layer2, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.l2[pool]
	return l, ok
}
func (p *fakePools) BGP(pool string) (ippool.BGP, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.bgp[pool]
	return b, ok
}
func (p *fakePools) OnChange(fn func(string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onChange = append(p.onChange, fn)
}
func (p *fakePools) remove(pool string) {
	p.mu.Lock()
	delete(p.l2, pool)
	fns := slices.Clone(p.onChange)
	p.mu.Unlock()
	for _, fn := range fns {
		fn(pool)
	}
}
