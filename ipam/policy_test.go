package ipam

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// byNamespace refuses subjects outside namespace ns, and, failing closed,
// those whose namespace is unknown, as ippool's pools do.
func byNamespace(ns string) func(Subject) error {
	return func(s Subject) error {
		switch {
		case s.NamespaceErr != nil:
			return fmt.Errorf("%w: %v", ErrUnknownNamespace, s.NamespaceErr)
		case s.Namespace != ns:
			return fmt.Errorf("namespace %s is not %s", s.Namespace, ns)
		}
		return nil
	}
}

func tenantPool(t *testing.T, name, ns string, prio int32, entries ...string) Pool {
	t.Helper()
	p := autoPool(t, name, entries...)
	p.Refuses, p.Priority = byNamespace(ns), prio
	return p
}

// unknownNS is a request of owner in namespace ns whose namespace could not
// be looked up.
func unknownNS(owner, ns string) Request {
	r := v4(owner)
	r.Name = ns + "/" + owner
	r.Subject = Subject{Namespace: ns, NamespaceErr: errors.New("not found in the cache")}
	return r
}

func inNS(r Request, ns string) Request {
	r.Name = ns + "/" + r.Owner
	r.Subject.Namespace = ns
	return r
}

// TestUnknownNamespaceFailsClosed: while a subject's namespace is unknown,
// a pool that selects by namespace refuses it, and no other pool is
// picked silently in its place; pools that cannot hold the request do not
// matter.
func TestUnknownNamespaceFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pools   []Pool
		req     Request
		want    string // the address; "" for a failure
		target  error
		wantMsg string
	}{
		{
			name:  "only open pools: served as before",
			pools: []Pool{autoPool(t, "open", "198.51.100.0/30")},
			req:   unknownNS("a", "team-a"),
			want:  "198.51.100.0",
		},
		{
			name:    "a tenant pool ranks first: no fall-through to the open pool",
			pools:   []Pool{tenantPool(t, "team-a", "team-a", 10, "192.0.2.0/30"), autoPool(t, "open", "198.51.100.0/30")},
			req:     unknownNS("a", "team-a"),
			target:  ErrUnknownNamespace,
			wantMsg: `team-a/a gets no address while pool "team-a" cannot tell whether it allows it: namespace unknown: not found in the cache`,
		},
		{
			name:   "a tenant pool ranks last: still no pick",
			pools:  []Pool{tenantPool(t, "team-a", "team-a", -10, "192.0.2.0/30"), autoPool(t, "open", "198.51.100.0/30")},
			req:    unknownNS("a", "team-a"),
			target: ErrUnknownNamespace,
		},
		{
			name:  "a tenant pool of the other family does not matter",
			pools: []Pool{tenantPool(t, "team-a", "team-a", 10, "2001:db8::/126"), autoPool(t, "open", "198.51.100.0/30")},
			req:   unknownNS("a", "team-a"),
			want:  "198.51.100.0",
		},
		{
			name:    "the named tenant pool refuses",
			pools:   []Pool{tenantPool(t, "team-a", "team-a", 0, "192.0.2.0/30")},
			req:     with(unknownNS("a", "team-a"), func(r *Request) { r.Pool = "team-a" }),
			target:  ErrUnknownNamespace,
			wantMsg: `pool "team-a" does not allow team-a/a: namespace unknown: not found in the cache`,
		},
		{
			name:    "an address of the tenant pool is refused",
			pools:   []Pool{tenantPool(t, "team-a", "team-a", 0, "192.0.2.0/30"), autoPool(t, "open", "198.51.100.0/30")},
			req:     withAddrs(unknownNS("a", "team-a"), "192.0.2.1"),
			target:  ErrUnknownNamespace,
			wantMsg: `team-a/a cannot use 192.0.2.1 (namespace unknown): pool "team-a" does not allow team-a/a`,
		},
		{
			name:  "an address of the open pool is served",
			pools: []Pool{tenantPool(t, "team-a", "team-a", 0, "192.0.2.0/30"), autoPool(t, "open", "198.51.100.0/30")},
			req:   withAddrs(unknownNS("a", "team-a"), "198.51.100.2"),
			want:  "198.51.100.2",
		},
		{
			name:    "a known namespace the pools refuse: each says why",
			pools:   []Pool{tenantPool(t, "team-a", "team-a", 0, "192.0.2.0/30"), tenantPool(t, "team-c", "team-c", 0, "198.51.100.0/30")},
			req:     inNS(v4("b"), "team-b"),
			target:  ErrNoPool,
			wantMsg: `no auto-assign pool with IPv4 addresses allows team-b/b (pool "team-a": namespace team-b is not team-a; pool "team-c": namespace team-b is not team-c)`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(tc.pools...)
			if tc.want != "" {
				ensureGets(t, a, tc.req, tc.want)
				return
			}
			err := ensureFails(t, a, tc.req, ErrNoPool, tc.wantMsg)
			if !errors.Is(err, tc.target) {
				t.Errorf("error %q does not wrap %q", err, tc.target)
			}
		})
	}
}

// TestRefusals: an address kept after its pool stopped allowing the owner
// is reported with the pool and the reason, unless another pool holding
// it allows the owner or no pool holds it any more.
func TestRefusals(t *testing.T) {
	type got struct{ Addr, Pool, Reason string }
	refusals := func(a *Allocator, req Request) []got {
		var out []got
		for _, r := range a.Refusals(req.Owner, req.Subject) {
			out = append(out, got{r.Addr.String(), r.Pool, r.Reason.Error()})
		}
		return out
	}
	req := inNS(v4("a"), "team-a")
	for _, tc := range []struct {
		name string
		edit func(*Allocator)
		req  Request
		want []got
	}{
		{name: "still allowed", edit: func(a *Allocator) { a.SetPool(tenantPool(t, "p", "team-a", 0, "192.0.2.0/30")) }, req: req},
		{
			name: "pool edited to another namespace",
			edit: func(a *Allocator) { a.SetPool(tenantPool(t, "p", "team-x", 0, "192.0.2.0/30")) },
			req:  req,
			want: []got{{"192.0.2.0", "p", "namespace team-a is not team-x"}},
		},
		{
			name: "namespace unknown",
			edit: func(*Allocator) {},
			req:  with(req, func(r *Request) { r.Subject.NamespaceErr = errors.New("gone") }),
			want: []got{{"192.0.2.0", "p", "namespace unknown: gone"}},
		},
		{
			// Every pool containing an address must allow its holder.
			name: "an overlapping pool allows it, the other not",
			edit: func(a *Allocator) {
				a.SetPool(tenantPool(t, "p", "team-x", 10, "192.0.2.0/30"))
				a.SetPool(autoPool(t, "wide", "192.0.2.0/24"))
			},
			req:  req,
			want: []got{{"192.0.2.0", "p", "namespace team-a is not team-x"}},
		},
		{
			name: "an overlapping pool now refuses it",
			edit: func(a *Allocator) { a.SetPool(tenantPool(t, "other", "team-x", 0, "192.0.2.0/31")) },
			req:  req,
			want: []got{{"192.0.2.0", "other", "namespace team-a is not team-x"}},
		},
		{name: "shrunk out of every pool", edit: func(a *Allocator) { a.SetPool(tenantPool(t, "p", "team-x", 0, "192.0.2.2/31")) }, req: req},
		{name: "not an owner", edit: func(*Allocator) {}, req: inNS(v4("nobody"), "team-a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(tenantPool(t, "p", "team-a", 0, "192.0.2.0/30"))
			ensureGets(t, a, req, "192.0.2.0")
			tc.edit(a)
			if diff := cmp.Diff(tc.want, refusals(a, tc.req)); diff != "" {
				t.Errorf("Refusals (-want +got):\n%s", diff)
			}
			// The owner keeps the address all the same.
			ensureGets(t, a, with(tc.req, func(r *Request) { r.Owner, r.Name = req.Owner, req.Name }), "192.0.2.0")
		})
	}
}

func TestOwnersIn(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/30"), autoPool(t, "q", "198.51.100.0/30"))
	ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp80), "192.0.2.0")
	ensureGets(t, a, shared(v4("a"), "k", "Cluster", tcp443), "192.0.2.0")
	ensureGets(t, a, with(v4("c"), func(r *Request) { r.Pool = "q" }), "198.51.100.0")
	for _, tc := range []struct {
		pool string
		want []OwnerRef
	}{
		{"p", []OwnerRef{{"a", "ns/a"}, {"b", "ns/b"}}},
		{"q", []OwnerRef{{"c", "ns/c"}}},
		{"missing", nil},
	} {
		t.Run(tc.pool, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, a.OwnersIn(tc.pool)); diff != "" {
				t.Errorf("OwnersIn(%s) (-want +got):\n%s", tc.pool, diff)
			}
		})
	}
}
