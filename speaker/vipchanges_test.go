package speaker

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestVIPChangesLog: entries are numbered in order; trimming keeps the
// numbers of the entries left; a dropped log gives nothing to a stream
// that had not seen all of it, so that it compares every VIP.
func TestVIPChangesLog(t *testing.T) {
	a1, a2, a3 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	for _, tc := range []struct {
		name   string
		do     func(c *vipChanges)
		since  uint64
		want   []netip.Addr
		wantOK bool
	}{
		{name: "empty", do: func(*vipChanges) {}, since: 0, want: []netip.Addr{}, wantOK: true},
		{name: "all", do: func(c *vipChanges) { c.addrs = append(c.addrs, a1, a2, a1) }, since: 0, want: []netip.Addr{a1, a2, a1}, wantOK: true},
		{name: "from the middle", do: func(c *vipChanges) { c.addrs = append(c.addrs, a1, a2, a3) }, since: 2, want: []netip.Addr{a3}, wantOK: true},
		{name: "trimmed", do: func(c *vipChanges) { c.addrs = append(c.addrs, a1, a2, a3); c.trim(2) }, since: 2, want: []netip.Addr{a3}, wantOK: true},
		{name: "before the trim", do: func(c *vipChanges) { c.addrs = append(c.addrs, a1, a2, a3); c.trim(2) }, since: 1, wantOK: false},
		{name: "trimmed past the end", do: func(c *vipChanges) { c.addrs = append(c.addrs, a1); c.trim(5) }, since: 1, want: []netip.Addr{}, wantOK: true},
		{name: "seen all, then dropped", do: func(c *vipChanges) { c.addrs = append(c.addrs, a1, a2); c.drop(); c.addrs = append(c.addrs, a3) }, since: 2, wantOK: false},
		{name: "after the drop", do: func(c *vipChanges) { c.addrs = append(c.addrs, a1, a2); c.drop(); c.addrs = append(c.addrs, a3) }, since: 3, want: []netip.Addr{a3}, wantOK: true},
		{name: "ahead of the log", do: func(c *vipChanges) { c.addrs = append(c.addrs, a1) }, since: 2, wantOK: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c vipChanges
			tc.do(&c)
			got, ok := c.since(tc.since)
			if ok != tc.wantOK {
				t.Fatalf("since(%d) ok = %v, want %v", tc.since, ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if got == nil {
				got = []netip.Addr{}
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("since(%d) (-want +got):\n%s", tc.since, diff)
			}
		})
	}
}

// TestVIPChangesBounded: a log no stream takes is dropped at its bound
// rather than grown for ever.
func TestVIPChangesBounded(t *testing.T) {
	a := &Agent{vips: map[netip.Addr]*vip{}}
	addr := netip.MustParseAddr("192.0.2.1")
	for range 10 * minChangeLog {
		a.vipChangedLocked(addr)
	}
	if n := len(a.changes.addrs); n > minChangeLog {
		t.Errorf("%d entries, want at most %d", n, minChangeLog)
	}
}
