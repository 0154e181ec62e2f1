package cpvip

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Timing of the layer-2 election.
const (
	// Interval is how often a speaker sends its message and re-evaluates.
	Interval = 100 * time.Millisecond
	// DeadInterval is how long a speaker is heard after its last message;
	// also the listen period at start-up.
	DeadInterval = 5 * Interval
	// forgetAfter is when a silent peer leaves the status.
	forgetAfter = time.Minute
)

// Action is what the election asks the speaker to do.
type Action int

// The actions.
const (
	// None: nothing changes.
	None Action = iota
	// Take: take the VIP over (address on lo, answer ARP/NDP, gratuitous
	// announcements).
	Take
	// Release: stop serving the VIP at once.
	Release
	// Reassert: keep the VIP and send gratuitous announcements again
	// (another holder was heard and loses to this one).
	Reassert
)

func (a Action) String() string {
	switch a {
	case Take:
		return "take"
	case Release:
		return "release"
	case Reassert:
		return "reassert"
	default:
		return "none"
	}
}

// Decision is the outcome of one step of the election.
type Decision struct {
	Action Action
	// Epoch is this speaker's epoch after the step (its term while it
	// holds).
	Epoch uint64
	// Why explains the action, for the log ("" with None).
	Why string
}

// ElectionConfig identifies this speaker in the election.
type ElectionConfig struct {
	Node   string
	NodeIP netip.Addr
	// Dead is the dead interval (DeadInterval when zero).
	Dead time.Duration
}

// heardPeer is a peer's last accepted message, when it arrived, and since
// when the peer has been heard without a break of a dead interval.
type heardPeer struct {
	msg   Message
	heard time.Time
	since time.Time
}

// Election is the layer-2 election of one speaker as a pure state machine:
// its inputs are the local kube-apiserver's readiness, the messages received
// and the clock; its outputs are decisions to take, keep or release the VIP
// and the epoch to send. It does no I/O and is not safe for concurrent use.
//
// The rules: a speaker serves only while its apiserver is ready; after
// start-up it listens for one dead interval before it may take over; when
// no holder is heard for the dead interval, or at once when the holder says
// it released, the ready speaker with the lowest node IP among the ready
// speakers heard within the dead interval (itself included) takes the VIP
// with epoch = highest epoch seen + 1; when two holders hear each other,
// the one with the larger support keeps it, then the higher epoch, then
// the lower node IP, and the other releases at once; a holder that hears
// nobody keeps holding.
//
// Support is how many ready speakers a speaker has heard without a break
// for at least the dead interval, itself included: the size of its side of
// the LAN before the two holders met. It is what keeps a heal from moving
// the VIP: a speaker cut off alone takes the VIP (it cannot tell a cut from
// a dead holder), but when its link returns it has support 1 against the
// holder that served the rest of the LAN all along, so it gives way (the
// epochs would have let it win: it took over last). When the holder itself
// was the one cut off, the successor has the larger support and keeps it.
// Peers heard again after the heal count only after a dead interval, by
// which time one holder has given way.
type Election struct {
	cfg      ElectionConfig
	started  time.Time
	ready    bool
	leaving  bool
	holding  bool
	epoch    uint64 // term while holding
	maxEpoch uint64 // highest epoch seen, own included
	peers    map[string]heardPeer
}

// NewElection starts an election at now, not ready and not holding.
func NewElection(cfg ElectionConfig, now time.Time) *Election {
	if cfg.Dead <= 0 {
		cfg.Dead = DeadInterval
	}
	cfg.NodeIP = cfg.NodeIP.Unmap()
	return &Election{cfg: cfg, started: now, peers: map[string]heardPeer{}}
}

// SetReady records the local apiserver's readiness and re-evaluates.
func (e *Election) SetReady(ready bool, now time.Time) Decision {
	e.ready = ready
	return e.step(now, nil)
}

// Receive records a verified message from a peer and re-evaluates. A
// message from this speaker's own node is ignored.
func (e *Election) Receive(m Message, now time.Time) Decision {
	if m.Node == e.cfg.Node {
		return e.decision(None, "")
	}
	m.NodeIP = m.NodeIP.Unmap()
	since := now
	if p, ok := e.peers[m.Node]; ok && now.Sub(p.heard) < e.cfg.Dead {
		since = p.since
	}
	e.peers[m.Node] = heardPeer{msg: m, heard: now, since: since}
	e.maxEpoch = max(e.maxEpoch, m.Epoch)
	return e.step(now, &m)
}

// Tick re-evaluates as time passes (call it every Interval).
func (e *Election) Tick(now time.Time) Decision {
	for n, p := range e.peers {
		if now.Sub(p.heard) > forgetAfter {
			delete(e.peers, n)
		}
	}
	return e.step(now, nil)
}

// Leave makes this speaker give the VIP up for good (shutting down): it
// releases it if held and never takes it again.
func (e *Election) Leave(now time.Time) Decision {
	e.leaving = true
	return e.step(now, nil)
}

// Stalled tells the election that this speaker itself did not run for a
// while (its loop woke up late: a starved node). Silence it saw meanwhile
// may be its own: messages may still wait unread. It listens for a dead
// interval again before it may take the VIP over; a holder keeps holding.
func (e *Election) Stalled(now time.Time) {
	e.started = now
}

// Holding says whether this speaker holds the VIP.
func (e *Election) Holding() bool { return e.holding }

// Outgoing is this speaker's own message now (without VIP and time).
func (e *Election) Outgoing(now time.Time) Message {
	epoch := e.maxEpoch
	if e.holding {
		epoch = e.epoch
	}
	return Message{Node: e.cfg.Node, NodeIP: e.cfg.NodeIP, Ready: e.ready && !e.leaving, Holding: e.holding, Epoch: epoch, Support: e.support(now)}
}

// support counts the ready speakers heard without a break for at least the
// dead interval, itself included when ready (saturating at 255).
func (e *Election) support(now time.Time) uint8 {
	n := 0
	if e.ready && !e.leaving {
		n++
	}
	for _, p := range e.live(now) {
		if p.msg.Ready && now.Sub(p.since) >= e.cfg.Dead {
			n++
		}
	}
	return uint8(min(n, 255))
}

// claim is a holder's standing when two holders meet.
type claim struct {
	support uint8
	epoch   uint64
	ip      netip.Addr
}

func (e *Election) own(now time.Time) claim {
	return claim{support: e.support(now), epoch: e.epoch, ip: e.cfg.NodeIP}
}

func peerClaim(m Message) claim { return claim{support: m.Support, epoch: m.Epoch, ip: m.NodeIP} }

// Holder returns the holder as this speaker sees it (itself, or the winning
// live peer that says it holds) and its epoch; "" when none.
func (e *Election) Holder(now time.Time) (string, uint64) {
	name, best := "", claim{}
	if e.holding {
		name, best = e.cfg.Node, e.own(now)
	}
	for _, p := range e.live(now) {
		if c := peerClaim(p.msg); p.msg.Holding && (name == "" || beats(c, best)) {
			name, best = p.msg.Node, c
		}
	}
	return name, best.epoch
}

// Peers returns the peers heard within the last minute, by name.
func (e *Election) Peers(now time.Time) []PeerStatus {
	out := make([]PeerStatus, 0, len(e.peers))
	for _, p := range e.peers {
		out = append(out, PeerStatus{
			Node: p.msg.Node, Address: p.msg.NodeIP.String(), APIServerReady: p.msg.Ready,
			Holding: p.msg.Holding, Epoch: p.msg.Epoch, LastHeardMillis: now.Sub(p.heard).Milliseconds(),
		})
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// live returns the peers heard within the dead interval.
func (e *Election) live(now time.Time) []heardPeer {
	var out []heardPeer
	for _, p := range e.peers {
		if now.Sub(p.heard) < e.cfg.Dead {
			out = append(out, p)
		}
	}
	return out
}

// beats says whether holder a keeps the VIP against holder b: the larger
// support, then the higher epoch, then the lower IP.
func beats(a, b claim) bool {
	if a.support != b.support {
		return a.support > b.support
	}
	if a.epoch != b.epoch {
		return a.epoch > b.epoch
	}
	return a.ip.Less(b.ip)
}

func (e *Election) decision(a Action, why string) Decision {
	epoch := e.maxEpoch
	if e.holding {
		epoch = e.epoch
	}
	return Decision{Action: a, Epoch: epoch, Why: why}
}

// step applies the rules; got is the message just received, if any.
func (e *Election) step(now time.Time, got *Message) Decision {
	live := e.live(now)
	if e.holding {
		switch {
		case e.leaving:
			e.holding = false
			return e.decision(Release, "shutting down")
		case !e.ready:
			e.holding = false
			return e.decision(Release, "apiserver not ready")
		}
		own := e.own(now)
		for _, p := range live {
			if p.msg.Holding && beats(peerClaim(p.msg), own) {
				e.holding = false
				return e.decision(Release, "holder "+p.msg.Node+" has precedence")
			}
		}
		if got != nil && got.Holding {
			return e.decision(Reassert, "holder "+got.Node+" heard; keeping the VIP")
		}
		return e.decision(None, "")
	}
	if !e.ready || e.leaving || now.Sub(e.started) < e.cfg.Dead {
		return e.decision(None, "")
	}
	lowest := e.cfg.NodeIP
	for _, p := range live {
		if p.msg.Holding {
			return e.decision(None, "")
		}
		if p.msg.Ready && p.msg.NodeIP.Less(lowest) {
			lowest = p.msg.NodeIP
		}
	}
	if lowest != e.cfg.NodeIP {
		return e.decision(None, "")
	}
	e.holding = true
	e.epoch = e.maxEpoch + 1
	e.maxEpoch = e.epoch
	return e.decision(Take, "no holder heard; lowest ready node IP")
}
