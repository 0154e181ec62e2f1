package chaos

import (
	"context"
	"fmt"
	"maps"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// watcher checks the invariants of DESIGN.md from the outside: its own
// informer on Services, none of IronLB's code. It counts
//   - double allocations: an address in the status of two live Services
//     that do not share it under one sharing key;
//   - address changes: a Service's address of a family changing or going
//     away while the Service and its address request stay the same;
//   - the longest time a Service waited for an address while its pool had
//     one free, and the longest an address went unannounced (no
//     ironlb.dev/Announced condition naming a node for it).
type watcher struct {
	poolSize int

	mu         sync.Mutex
	svcs       map[types.UID]*svcState
	holders    map[string]map[types.UID]bool // address → live Services holding it
	doubles    int
	changes    int
	reported   map[string]bool
	maxWait    time.Duration
	maxWaitOf  string
	maxUnann   time.Duration
	maxUnannOf string
	lastTick   time.Time
	paused     bool
	problems   []string
}

type svcState struct {
	key         string
	terminating bool
	request     string            // what the Service asked for when it got its addresses
	edited      bool              // the request changed since (even if back again)
	shareKeys   map[string]bool   // the sharing keys it had while holding them
	addrs       map[string]string // family → address in status
	assigned    bool
	since       time.Time     // when it got its current addresses
	waited      time.Duration // time without an address while the pool had one free
	announced   string        // the Announced condition's message, when True
	annSince    time.Time     // when announced last changed
	unannounced time.Duration // time with addresses but not announced
}

// poolSize counts the addresses of prefixes a pool with avoidBuggyIPs
// hands out: IPv4 addresses ending in .0 or .255 are left out.
func poolSize(prefixes []netip.Prefix) int {
	n := 0
	for _, p := range prefixes {
		size := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
		n += int(size.Int64())
		if p.Addr().Is4() {
			for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
				if b := a.As4(); b[3] == 0 || b[3] == 255 {
					n--
				}
			}
		}
	}
	return n
}

func newWatcher(poolSize int) *watcher {
	return &watcher{
		poolSize: poolSize,
		svcs:     map[types.UID]*svcState{},
		holders:  map[string]map[types.UID]bool{},
		reported: map[string]bool{},
	}
}

// run watches Services until ctx ends.
func (w *watcher) run(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Services().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.update(obj.(*corev1.Service)) },
		UpdateFunc: func(_, obj any) { w.update(obj.(*corev1.Service)) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if svc, ok := obj.(*corev1.Service); ok {
				w.remove(svc.UID)
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("the watcher's informer did not sync")
	}
	go w.tick(ctx)
	return nil
}

// request summarizes what a Service asks of its addresses.
func request(svc *corev1.Service) string {
	a := svc.Annotations
	return strings.Join([]string{
		a["ironlb.dev/allow-shared-ip"], a["ironlb.dev/pool"], a["ironlb.dev/load-balancer-ips"],
		svc.Spec.LoadBalancerIP, fmt.Sprint(svc.Spec.IPFamilies), string(svc.Spec.Type),
	}, "|")
}

func (w *watcher) update(svc *corev1.Service) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer && len(svc.Status.LoadBalancer.Ingress) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.svcs[svc.UID]
	if st == nil {
		st = &svcState{key: svc.Namespace + "/" + svc.Name, addrs: map[string]string{}, shareKeys: map[string]bool{}}
		w.svcs[svc.UID] = st
	}
	terminating := svc.DeletionTimestamp != nil
	req := request(svc)
	addrs := map[string]string{}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			fam := "IPv4"
			if a.Is6() {
				fam = "IPv6"
			}
			addrs[fam] = a.String()
		}
	}
	// An address may change only after the request did (since the
	// address was given): a user's edit the CCM may not have seen yet
	// keeps the old address meanwhile.
	changed := !maps.Equal(st.addrs, addrs)
	if req != st.request {
		st.edited = true
	}
	if changed && !terminating && !st.edited {
		for fam, was := range st.addrs {
			if now := addrs[fam]; now != was {
				w.changes++
				w.problemf("%s: %s address changed from %s to %q without a change of its request", st.key, fam, was, now)
			}
		}
	}
	for _, a := range st.addrs {
		delete(w.holders[a], svc.UID)
	}
	if changed || len(addrs) == 0 {
		// The request the current addresses were given under.
		st.since = time.Now()
		st.request, st.edited = req, false
		st.shareKeys = map[string]bool{}
	}
	// A Service keeps its address when it changes its key as the only
	// holder, and keeps it until the CCM syncs it when it leaves a group:
	// every key it had while holding the address counts.
	if k := svc.Annotations["ironlb.dev/allow-shared-ip"]; k != "" {
		st.shareKeys[k] = true
	}
	ann := ""
	if c := meta.FindStatusCondition(svc.Status.Conditions, "ironlb.dev/Announced"); c != nil && c.Status == metav1.ConditionTrue {
		ann = c.Message
	}
	if ann != st.announced {
		st.announced, st.annSince = ann, time.Now()
		if ann != "" {
			if st.unannounced > w.maxUnann {
				w.maxUnann, w.maxUnannOf = st.unannounced, st.key
			}
			st.unannounced = 0
		}
	}
	st.terminating, st.addrs = terminating, addrs
	if len(addrs) > 0 {
		st.assigned = true
		if st.waited > w.maxWait {
			w.maxWait, w.maxWaitOf = st.waited, st.key
		}
		st.waited = 0
	}
	if terminating {
		return // its addresses are being released; another may take them
	}
	for _, a := range addrs {
		if w.holders[a] == nil {
			w.holders[a] = map[types.UID]bool{}
		}
		w.holders[a][svc.UID] = true
		for other := range w.holders[a] {
			o := w.svcs[other]
			if other == svc.UID || commonKey(st.shareKeys, o.shareKeys) {
				continue
			}
			pair := a + " " + min(st.key, o.key) + " " + max(st.key, o.key)
			if !w.reported[pair] {
				w.reported[pair] = true
				w.doubles++
				w.problemf("%s held by %s (keys %v) and %s (keys %v)", a, st.key, slices.Sorted(maps.Keys(st.shareKeys)), o.key, slices.Sorted(maps.Keys(o.shareKeys)))
			}
		}
	}
}

func commonKey(a, b map[string]bool) bool {
	for k := range a {
		if b[k] {
			return true
		}
	}
	return false
}

func (w *watcher) remove(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st := w.svcs[uid]; st != nil {
		for _, a := range st.addrs {
			delete(w.holders[a], uid)
		}
	}
	delete(w.svcs, uid)
}

// tick accounts the time Services wait for an address while the pool has
// a free one.
func (w *watcher) tick(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.mu.Lock()
			inUse := map[string]bool{}
			for _, st := range w.svcs {
				for _, a := range st.addrs {
					inUse[a] = true
				}
			}
			if !w.lastTick.IsZero() && !w.paused && len(inUse) < w.poolSize {
				d := now.Sub(w.lastTick)
				for _, st := range w.svcs {
					if !st.terminating && len(st.addrs) == 0 {
						st.waited += d
					}
				}
			}
			if !w.lastTick.IsZero() && !w.paused {
				d := now.Sub(w.lastTick)
				for _, st := range w.svcs {
					if !st.terminating && len(st.addrs) > 0 && st.announced == "" {
						st.unannounced += d
					}
				}
			}
			w.lastTick = now
			w.mu.Unlock()
		}
	}
}

// pause stops counting waits (while kube-apiserver is down, nothing can
// be assigned) or starts again.
func (w *watcher) pause(on bool) {
	w.mu.Lock()
	w.paused = on
	w.mu.Unlock()
}

func (w *watcher) problemf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	w.problems = append(w.problems, msg)
	logf("watcher: %s", msg)
}

// assigned returns the live Services' addresses, by Service.
func (w *watcher) assigned() map[string][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]string{}
	for _, st := range w.svcs {
		if !st.terminating && len(st.addrs) > 0 {
			out[st.key] = slices.Sorted(maps.Values(st.addrs))
		}
	}
	return out
}

// steady returns the live Services announced (their Announced condition
// True, naming a node for their address) and unchanged for at least d,
// with one address of each.
func (w *watcher) steady(d time.Duration) map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for _, st := range w.svcs {
		if st.terminating || len(st.addrs) == 0 || st.announced == "" || time.Since(st.since) < d || time.Since(st.annSince) < d {
			continue
		}
		for _, a := range st.addrs {
			if strings.Contains(st.announced, a+"=") && !strings.Contains(st.announced, a+"=-") {
				out[st.key] = a
				break
			}
		}
	}
	return out
}

// holds reports whether Service key still holds addr, announced and
// unchanged for d.
func (w *watcher) holds(key, addr string, d time.Duration) bool {
	for k, a := range w.steady(d) {
		if k == key && a == addr {
			return true
		}
	}
	return false
}

// pending counts the live Services without an address.
func (w *watcher) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, st := range w.svcs {
		if !st.terminating && len(st.addrs) == 0 {
			n++
		}
	}
	return n
}

// unannouncedMax returns the longest time an address went unannounced.
func (w *watcher) unannouncedMax() (time.Duration, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m, of := w.maxUnann, w.maxUnannOf
	for _, st := range w.svcs {
		if st.unannounced > m {
			m, of = st.unannounced, st.key+" (still unannounced)"
		}
	}
	return m, of
}

// result returns the counts: double allocations, address changes, and the
// longest wait for an address while one was free (including Services
// still waiting).
func (w *watcher) result() (doubles, changes int, maxWait time.Duration, of string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	maxWait, of = w.maxWait, w.maxWaitOf
	for _, st := range w.svcs {
		if st.waited > maxWait {
			maxWait, of = st.waited, st.key+" (still waiting)"
		}
	}
	return w.doubles, w.changes, maxWait, of
}
