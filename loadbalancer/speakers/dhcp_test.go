package speakers

import (
	"context"
	"errors"
	"testing"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestDHCPResultsOnlyFromTheAskedNode: an exchange's result counts only
// when the speaker it was sent to reports it; another speaker (an
// authentic but hostile one) cannot answer it, and a speaker without the
// capability is never asked.
func TestDHCPResultsOnlyFromTheAskedNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New(ctx, Options{})
	asked, other, old := newTestSession(m, "node-a"), newTestSession(m, "node-b"), newTestSession(m, "node-c")
	m.mu.Lock()
	for _, s := range []*session{asked, other, old} {
		s.state.Connected = true
		s.dhcpOut = make(chan *speakerv1.DHCPExchange, dhcpQueue)
	}
	asked.state.Capabilities = []string{speakerv1.CapabilityDHCP}
	other.state.Capabilities = []string{speakerv1.CapabilityDHCP}
	m.mu.Unlock()

	if got := m.DHCPNodes(); len(got) != 2 || got[0] != "node-a" || got[1] != "node-b" {
		t.Fatalf("DHCPNodes = %v, want node-a and node-b", got)
	}
	if _, err := m.DHCP(ctx, "node-c", &speakerv1.DHCPExchange{}); !errors.Is(err, ErrNoDHCPSpeaker) {
		t.Fatalf("asking a speaker without the capability: %v, want ErrNoDHCPSpeaker", err)
	}

	type answer struct {
		res *speakerv1.DHCPResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := m.DHCP(ctx, "node-a", &speakerv1.DHCPExchange{Op: speakerv1.DHCPExchange_ACQUIRE, TimeoutMs: 60_000})
		done <- answer{res, err}
	}()
	var ex *speakerv1.DHCPExchange
	select {
	case ex = <-asked.dhcpOut:
	case <-time.After(10 * time.Second):
		t.Fatal("the exchange never went out to node-a")
	}
	if ex.GetId() == 0 {
		t.Fatal("the exchange has no id")
	}
	forged := &speakerv1.Report{Dhcp: []*speakerv1.DHCPResult{{Id: ex.GetId(), Outcome: speakerv1.DHCPResult_GRANTED, Address: "192.0.2.66"}}}
	other.takeDHCPResults(forged)
	if len(forged.GetDhcp()) != 0 {
		t.Error("the results stay in the report after they were taken")
	}
	genuine := &speakerv1.Report{Dhcp: []*speakerv1.DHCPResult{{Id: ex.GetId(), Outcome: speakerv1.DHCPResult_GRANTED, Address: "192.0.2.100"}}}
	asked.takeDHCPResults(genuine)
	a := <-done
	if a.err != nil || a.res.GetAddress() != "192.0.2.100" {
		t.Fatalf("DHCP: %v, %v; want node-a's answer 192.0.2.100", a.res, a.err)
	}
}
