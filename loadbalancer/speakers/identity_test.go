package speakers

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/pki"
)

// TestEnrollment: a new speaker presents a self-signed certificate and its
// token; the CCM checks the token, certifies the speaker's own key for its
// node, reconnects, and from then on the speaker presents that
// certificate. Instructions flow only after that.
func TestEnrollment(t *testing.T) {
	e := newEnv(t)
	creds := e.credentials("node-a", "node-a")
	if ok, _ := creds.Enrolled(); ok {
		t.Fatal("a new speaker is enrolled")
	}
	sp := e.startSpeakerWith("node-a", creds)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	m.Assign("node-a", ann("192.0.2.200"))
	waitFor(t, "snapshot applied", 5*time.Second, func() bool { return len(sp.agent.Addresses()) == 1 })
	ok, notAfter := creds.Enrolled()
	if !ok {
		t.Fatal("the speaker got instructions without a node certificate")
	}
	if life := time.Until(notAfter); life > pki.NodeCertLifetime || life < pki.NodeCertLifetime-time.Minute {
		t.Errorf("node certificate valid for %s, want about %s", life, pki.NodeCertLifetime)
	}
}

// TestTokenOfAnotherNode: a speaker answering at node-a's address whose
// token is bound to node-b (a compromised node-b relaying, or a
// misconfiguration) is refused: nothing is recorded or sent, and the
// session's problem names the reason.
func TestTokenOfAnotherNode(t *testing.T) {
	e := newEnv(t)
	creds := e.credentials("node-a", "node-b")
	sp := e.startSpeakerWith("node-a", creds)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	m.Assign("node-a", ann("192.0.2.200"))
	waitFor(t, "enrollment refused", 5*time.Second, func() bool {
		st, _ := m.State("node-a")
		return strings.Contains(st.Problem, pki.RefusalWrongNode)
	})
	st, _ := m.State("node-a")
	if st.Connected || st.Reported || st.Sent != 0 {
		t.Errorf("refused speaker: connected %v, reported %v, sent %d; want none", st.Connected, st.Reported, st.Sent)
	}
	if ok, _ := creds.Enrolled(); ok || len(sp.agent.Addresses()) != 0 {
		t.Errorf("refused speaker enrolled %v, announces %v", ok, sp.agent.Addresses())
	}
	t.Logf("problem: %s", st.Problem)
}

// TestCertificateOfAnotherNode: node-b's enrolled speaker, reached at
// node-a's address (say node-a's IP moved to it, or traffic is
// redirected), fails the handshake: its certificate names node-b. The
// control: the same speaker is accepted as node-b.
func TestCertificateOfAnotherNode(t *testing.T) {
	e := newEnv(t)
	sp := e.startSpeaker("node-b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-b", nodeAddr("node-b"))
	waitFor(t, "node-b connected", 5*time.Second, func() bool { st, _ := m.State("node-b"); return st.Connected })

	e.mu.Lock()
	e.speakers["node-a"] = sp // node-a's address now reaches node-b's speaker
	e.mu.Unlock()
	m.SetNode("node-a", nodeAddr("node-a"))
	m.Assign("node-a", ann("192.0.2.200"))
	waitFor(t, "handshake refused", 5*time.Second, func() bool {
		st, _ := m.State("node-a")
		return strings.Contains(st.Problem, pki.ErrWrongNode.Error())
	})
	st, _ := m.State("node-a")
	if st.Connected || st.Reported || st.Sent != 0 {
		t.Errorf("speaker of node-b at node-a's address: connected %v, reported %v, sent %d; want none", st.Connected, st.Reported, st.Sent)
	}
	if got := sp.agent.Addresses(); len(got) != 0 {
		t.Errorf("node-b's speaker announces %v, meant for node-a", got)
	}
	t.Logf("problem: %s", st.Problem)
}
