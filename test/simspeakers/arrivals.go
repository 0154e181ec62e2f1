package simspeakers

import (
	"maps"
	"sync"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// Arrival is when the latest instruction that added or removed one
// address reached a speaker.
type Arrival struct {
	// At is when the instruction arrived (before the agent applied it).
	At time.Time
	// Added is true when the instruction announced the address, false
	// when it withdrew it (an update's withdraw, or a snapshot without it).
	Added bool
	// Kind is the instruction's kind: "snapshot" or "update".
	Kind string
}

// arrivals keeps, for every address a speaker was ever told about, the
// latest Arrival: memory bounded by the addresses, not the instructions.
// It is safe for concurrent use.
type arrivals struct {
	mu     sync.Mutex
	held   map[string]bool // the addresses the instructions so far announce
	latest map[string]Arrival
}

func newArrivals() *arrivals {
	return &arrivals{held: map[string]bool{}, latest: map[string]Arrival{}}
}

// record notes the addresses in changes. A snapshot adds the addresses it
// has that were not held and removes those held it lacks; an update adds
// each announce (also a re-announce: it is an instruction about that
// address) and removes each withdraw.
func (a *arrivals) record(in *speakerv1.Instruction, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch k := in.GetKind().(type) {
	case *speakerv1.Instruction_Snapshot:
		now := make(map[string]bool, len(k.Snapshot.GetAnnouncements()))
		for _, an := range k.Snapshot.GetAnnouncements() {
			now[an.GetAddress()] = true
			if !a.held[an.GetAddress()] {
				a.latest[an.GetAddress()] = Arrival{At: at, Added: true, Kind: "snapshot"}
			}
		}
		for addr := range a.held {
			if !now[addr] {
				a.latest[addr] = Arrival{At: at, Kind: "snapshot"}
			}
		}
		a.held = now
	case *speakerv1.Instruction_Update:
		for _, an := range k.Update.GetAnnounce() {
			a.held[an.GetAddress()] = true
			a.latest[an.GetAddress()] = Arrival{At: at, Added: true, Kind: "update"}
		}
		for _, addr := range k.Update.GetWithdraw() {
			delete(a.held, addr)
			a.latest[addr] = Arrival{At: at, Kind: "update"}
		}
	}
}

// get returns address's latest arrival; false if none came.
func (a *arrivals) get(address string) (Arrival, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.latest[address]
	return r, ok
}

// all returns a copy of every address's latest arrival.
func (a *arrivals) all() map[string]Arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.latest)
}
