package speakers

import (
	"context"
	"testing"
	"time"
)

// TestResend: Resend sends an assigned announcement again, unchanged (one
// more update, applied), while assigning an equal announcement or
// resending an address the node was not assigned sends nothing.
func TestResend(t *testing.T) {
	e := newEnv(t)
	e.startSpeaker("node-a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	m.Assign("node-a", ann("192.0.2.200"))
	applied := func(sent uint64) func() bool {
		return func() bool {
			st, _ := m.State("node-a")
			return st.Connected && st.Sent == sent && st.Applied == sent
		}
	}
	waitFor(t, "snapshot applied", 5*time.Second, applied(1))
	dirty := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.sessions["node-a"].dirty)
	}

	m.Assign("node-a", ann("192.0.2.200"))
	m.Resend("node-a", "192.0.2.201")
	if n := dirty(); n != 0 {
		t.Fatalf("%d addresses to send after an equal Assign and a Resend of an unassigned address, want 0", n)
	}
	m.Resend("node-a", "192.0.2.200")
	waitFor(t, "the announcement sent again and applied", 5*time.Second, applied(2))
}
