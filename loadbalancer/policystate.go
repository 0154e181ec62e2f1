package loadbalancer

import (
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/ironlb/ironlb/ipam"
)

// policyState remembers, per Service ("namespace/name"), the pools its
// addresses lie in and the addresses it keeps although their pool no
// longer allows it (ipam.Refusal), so that an Event is sent when that
// starts and when it ends, not on every check, and the gauge
// ironlb_services_outside_pool_policy can be read at scrape time.
type policyState struct {
	mu  sync.Mutex
	svc map[string]policyEntry
	// byPool indexes svc by the pools the Services' addresses lay in at
	// their last check: after a pool edit those are rechecked with the
	// Services now in the pool, whatever its new ranges.
	byPool map[string]map[string]bool
}

type policyEntry struct {
	uid     string
	pools   []string
	refused map[netip.Addr]ipam.Refusal
}

func newPolicyState() *policyState {
	return &policyState{svc: map[string]policyEntry{}, byPool: map[string]map[string]bool{}}
}

// policyChange is what a check changed for one Service.
type policyChange struct {
	// started are the addresses its pool stopped allowing (or allows for
	// another reason now).
	started []ipam.Refusal
	// ended are the addresses that are no longer refused.
	ended []ipam.Refusal
}

// update records the check of Service key (uid, holding addresses in
// pools) and returns what changed. A Service of another uid under the same
// key is a new Service: nothing carries over.
func (s *policyState) update(key, uid string, pools []string, refusals []ipam.Refusal) policyChange {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.svc[key]
	if old.uid != uid {
		old = policyEntry{}
	}
	s.unindexLocked(key)
	var ch policyChange
	next := policyEntry{uid: uid, pools: compactPools(pools), refused: map[netip.Addr]ipam.Refusal{}}
	for _, r := range refusals {
		next.refused[r.Addr] = r
		if prev, ok := old.refused[r.Addr]; !ok || prev.Pool != r.Pool || prev.Reason.Error() != r.Reason.Error() {
			ch.started = append(ch.started, r)
		}
	}
	for _, a := range slices.SortedFunc(maps.Keys(old.refused), netip.Addr.Compare) {
		if _, still := next.refused[a]; !still {
			ch.ended = append(ch.ended, old.refused[a])
		}
	}
	s.svc[key] = next
	for _, p := range next.pools {
		if s.byPool[p] == nil {
			s.byPool[p] = map[string]bool{}
		}
		s.byPool[p][key] = true
	}
	return ch
}

// forget drops Service key, which holds no address any more; it returns
// the addresses that were refused, for the record.
func (s *policyState) forget(key string) []ipam.Refusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.svc[key]
	s.unindexLocked(key)
	delete(s.svc, key)
	var out []ipam.Refusal
	for _, a := range slices.SortedFunc(maps.Keys(old.refused), netip.Addr.Compare) {
		out = append(out, old.refused[a])
	}
	return out
}

func (s *policyState) unindexLocked(key string) {
	for _, p := range s.svc[key].pools {
		delete(s.byPool[p], key)
		if len(s.byPool[p]) == 0 {
			delete(s.byPool, p)
		}
	}
}

// servicesIn returns the Services whose addresses lay in pool at their
// last check.
func (s *policyState) servicesIn(pool string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.byPool[pool]))
}

// outside counts, per pool, the Services keeping an address of it that
// it no longer allows.
func (s *policyState) outside() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, e := range s.svc {
		seen := map[string]bool{}
		for _, r := range e.refused {
			if !seen[r.Pool] {
				seen[r.Pool] = true
				out[r.Pool]++
			}
		}
	}
	return out
}

func compactPools(pools []string) []string {
	out := slices.DeleteFunc(slices.Clone(pools), func(p string) bool { return p == "" })
	slices.Sort(out)
	return slices.Compact(out)
}
