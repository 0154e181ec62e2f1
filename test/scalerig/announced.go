package scalerig

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// want is where one VIP should be announced.
type want struct {
	svc  string
	kind Kind
	// nodes are a Local Service's endpoint nodes.
	nodes []string
}

// expected returns, for every Service in Namespace with an address, where
// its VIP should be announced, and how many Services have none yet.
func (r *Rig) expected(ctx context.Context) (map[netip.Addr]want, int, error) {
	list, err := r.CP.Client.CoreV1().Services(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("listing Services: %w", err)
	}
	out := map[netip.Addr]want{}
	missing := 0
	for i := range list.Items {
		svc := &list.Items[i]
		if svc.Spec.Type != "LoadBalancer" {
			continue
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			missing++
			continue
		}
		a, err := netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
		if err != nil {
			return nil, 0, fmt.Errorf("Service %s: %w", svc.Name, err)
		}
		w := want{svc: svc.Name, kind: kindOfService(svc)}
		if w.kind == Local {
			w.nodes = r.local[svc.Name]
		}
		out[a] = w
	}
	return out, missing, nil
}

// check compares where the live speakers announce with wants: a layer-2
// VIP by exactly one speaker over layer 2 and none over BGP; a BGP VIP by
// every live speaker over BGP, a Local one by exactly its live endpoint
// nodes, and none over layer 2; nothing else announced. It returns, per
// VIP, when its latest announcing speaker began to announce it.
func (r *Rig) check(wants map[netip.Addr]want) (map[netip.Addr]time.Time, error) {
	at := make(map[netip.Addr]time.Time, len(wants))
	l2 := map[netip.Addr][]string{}
	advertisers := map[netip.Addr]int{}
	live := 0
	for _, s := range r.Fleet.Speakers() {
		if s.Killed() {
			continue
		}
		live++
		for a, since := range s.Recorder.Announced() {
			l2[a] = append(l2[a], s.Node)
			at[a] = maxTime(at[a], since)
		}
		for p, since := range s.BGP.Exported() {
			a := p.Addr()
			w, ok := wants[a]
			switch {
			case !ok:
				return nil, fmt.Errorf("%s advertises %s, which no Service holds", s.Node, a)
			case w.kind == L2:
				return nil, fmt.Errorf("%s advertises the layer-2 VIP %s (%s) over BGP", s.Node, a, w.svc)
			case w.kind == Local && !slices.Contains(w.nodes, s.Node):
				return nil, fmt.Errorf("%s advertises %s (%s, externalTrafficPolicy Local), but its endpoints are on %v", s.Node, a, w.svc, w.nodes)
			}
			advertisers[a]++
			at[a] = maxTime(at[a], since)
		}
	}
	for a, nodes := range l2 {
		w, ok := wants[a]
		switch {
		case !ok:
			return nil, fmt.Errorf("%v answer for %s, which no Service holds", nodes, a)
		case w.kind != L2:
			return nil, fmt.Errorf("%v answer for the BGP VIP %s (%s) over layer 2", nodes, a, w.svc)
		case len(nodes) != 1:
			return nil, fmt.Errorf("%s (%s) answered for by %v, want one speaker", a, w.svc, nodes)
		}
	}
	for _, a := range slices.SortedFunc(maps.Keys(wants), netip.Addr.Compare) {
		w := wants[a]
		switch w.kind {
		case L2:
			if len(l2[a]) == 0 {
				return nil, fmt.Errorf("no speaker answers for %s (%s)", a, w.svc)
			}
		case BGP:
			if advertisers[a] != live {
				return nil, fmt.Errorf("%s (%s) advertised by %d of %d live speakers", a, w.svc, advertisers[a], live)
			}
		case Local:
			n := 0
			for _, node := range w.nodes {
				if s := r.Fleet.Speaker(node); s != nil && !s.Killed() {
					n++
				}
			}
			if advertisers[a] != n {
				return nil, fmt.Errorf("%s (%s, Local) advertised by %d speakers, want its %d live endpoint nodes of %v", a, w.svc, advertisers[a], n, w.nodes)
			}
		}
	}
	return at, nil
}

// waitAnnounced waits until every LoadBalancer Service in Namespace has an
// address and every VIP is announced where it should be (check); it
// returns the VIPs' wants and announcement times.
func (r *Rig) waitAnnounced(ctx context.Context, timeout time.Duration) (map[netip.Addr]want, map[netip.Addr]time.Time, error) {
	var wants map[netip.Addr]want
	var at map[netip.Addr]time.Time
	err := poll(ctx, timeout, func() error {
		if wants == nil {
			w, missing, err := r.expected(ctx)
			if err != nil {
				return err
			}
			if missing > 0 {
				return fmt.Errorf("%d Services have no address", missing)
			}
			wants = w
		}
		var err error
		at, err = r.check(wants)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	// The Services may have changed meanwhile (another address): check
	// once more against them as they are now.
	w, missing, err := r.expected(ctx)
	if err != nil {
		return nil, nil, err
	}
	if missing > 0 || !maps.EqualFunc(w, wants, func(a, b want) bool { return a.svc == b.svc && a.kind == b.kind }) {
		return nil, nil, fmt.Errorf("the Services changed while their announcements were awaited")
	}
	return wants, at, nil
}

// poll calls cond until it returns nil or timeout passes, then returns its
// last error. It waits between calls at least 100 ms and twice as long as
// the last call took, so that checking a large fleet leaves the CPU to
// what is measured.
func poll(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		start := time.Now()
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-time.After(max(100*time.Millisecond, 2*time.Since(start))):
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// byKind splits the VIPs' latest announcement times by kind (Local counts
// as BGP) and returns the latest of each.
func byKind(wants map[netip.Addr]want, at map[netip.Addr]time.Time) (l2, bgp time.Time) {
	for a, w := range wants {
		if w.kind == L2 {
			l2 = maxTime(l2, at[a])
		} else {
			bgp = maxTime(bgp, at[a])
		}
	}
	return l2, bgp
}
