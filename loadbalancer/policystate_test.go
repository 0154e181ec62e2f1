package loadbalancer

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/ipam"
)

// TestPolicyState: an Event-worthy change is reported once when an address
// starts being refused (or for another reason), once when that ends, and
// not on checks that change nothing; the gauge counts Services per pool;
// the index finds a Service by the pools it was last seen in.
func TestPolicyState(t *testing.T) {
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	refused := func(a netip.Addr, pool, why string) ipam.Refusal {
		return ipam.Refusal{Addr: a, Pool: pool, Reason: errors.New(why)}
	}
	type change struct{ Started, Ended []string }
	type step struct {
		key, uid   string
		pools      []string
		refusals   []ipam.Refusal
		forget     bool
		want       change
		wantGauge  map[string]int
		wantInPool map[string][]string
	}
	summary := func(rs []ipam.Refusal) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Addr.String()+"@"+r.Pool+": "+r.Reason.Error())
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"allowed all along", []step{
			{key: "a/web", uid: "u1", pools: []string{"p"}, wantGauge: map[string]int{}, wantInPool: map[string][]string{"p": {"a/web"}}},
			{key: "a/web", uid: "u1", pools: []string{"p"}, wantGauge: map[string]int{}},
		}},
		{"refused, again, then allowed", []step{
			{key: "a/web", uid: "u1", pools: []string{"p"}, refusals: []ipam.Refusal{refused(a1, "p", "not team-a")},
				want: change{Started: []string{"192.0.2.1@p: not team-a"}}, wantGauge: map[string]int{"p": 1}},
			{key: "a/web", uid: "u1", pools: []string{"p"}, refusals: []ipam.Refusal{refused(a1, "p", "not team-a")},
				wantGauge: map[string]int{"p": 1}},
			{key: "a/web", uid: "u1", pools: []string{"p"}, refusals: []ipam.Refusal{refused(a1, "p", "labels differ")},
				want: change{Started: []string{"192.0.2.1@p: labels differ"}}, wantGauge: map[string]int{"p": 1}},
			{key: "a/web", uid: "u1", pools: []string{"p"},
				want: change{Ended: []string{"192.0.2.1@p: labels differ"}}, wantGauge: map[string]int{}},
		}},
		{"one Service, two refused addresses of one pool, counted once", []step{
			{key: "a/web", uid: "u1", pools: []string{"p", "p"}, refusals: []ipam.Refusal{refused(a1, "p", "x"), refused(a2, "p", "x")},
				want: change{Started: []string{"192.0.2.1@p: x", "2001:db8::1@p: x"}}, wantGauge: map[string]int{"p": 1}},
			{key: "b/api", uid: "u2", pools: []string{"p", "q"}, refusals: []ipam.Refusal{refused(a2, "q", "y")},
				want: change{Started: []string{"2001:db8::1@q: y"}}, wantGauge: map[string]int{"p": 1, "q": 1},
				wantInPool: map[string][]string{"p": {"a/web", "b/api"}, "q": {"b/api"}}},
		}},
		{"a recreated Service starts afresh", []step{
			{key: "a/web", uid: "u1", pools: []string{"p"}, refusals: []ipam.Refusal{refused(a1, "p", "x")},
				want: change{Started: []string{"192.0.2.1@p: x"}}, wantGauge: map[string]int{"p": 1}},
			{key: "a/web", uid: "u9", pools: []string{"p"}, refusals: []ipam.Refusal{refused(a1, "p", "x")},
				want: change{Started: []string{"192.0.2.1@p: x"}}, wantGauge: map[string]int{"p": 1}},
		}},
		{"forgotten when it gives the address up", []step{
			{key: "a/web", uid: "u1", pools: []string{"p"}, refusals: []ipam.Refusal{refused(a1, "p", "x")},
				want: change{Started: []string{"192.0.2.1@p: x"}}, wantGauge: map[string]int{"p": 1}},
			{key: "a/web", forget: true, want: change{Ended: []string{"192.0.2.1@p: x"}}, wantGauge: map[string]int{}, wantInPool: map[string][]string{"p": nil}},
		}},
		{"moved to another pool: indexed there only", []step{
			{key: "a/web", uid: "u1", pools: []string{"p"}, wantGauge: map[string]int{}},
			{key: "a/web", uid: "u1", pools: []string{"q", ""}, wantGauge: map[string]int{}, wantInPool: map[string][]string{"p": nil, "q": {"a/web"}, "": nil}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPolicyState()
			for i, st := range tc.steps {
				var got change
				if st.forget {
					got.Ended = summary(s.forget(st.key))
				} else {
					ch := s.update(st.key, st.uid, st.pools, st.refusals)
					got = change{summary(ch.started), summary(ch.ended)}
				}
				if diff := cmp.Diff(st.want, got); diff != "" {
					t.Errorf("step %d: change (-want +got):\n%s", i, diff)
				}
				if diff := cmp.Diff(st.wantGauge, s.outside()); diff != "" {
					t.Errorf("step %d: outside (-want +got):\n%s", i, diff)
				}
				for pool, want := range st.wantInPool {
					if diff := cmp.Diff(want, s.servicesIn(pool)); diff != "" {
						t.Errorf("step %d: servicesIn(%q) (-want +got):\n%s", i, pool, diff)
					}
				}
			}
		})
	}
}
