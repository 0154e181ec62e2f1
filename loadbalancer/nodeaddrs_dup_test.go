package loadbalancer

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/ironlb/ironlb/ipam"
)

// nodeRecorder records Events as "object: type reason message".
type nodeRecorder struct {
	*record.FakeRecorder
	mu     sync.Mutex
	events []string
}

func (r *nodeRecorder) Eventf(obj runtime.Object, typ, reason, format string, args ...any) {
	name := ""
	if o, ok := obj.(metav1.Object); ok {
		name = o.GetName()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, name+": "+typ+" "+reason+" "+fmt.Sprintf(format, args...))
}

func (r *nodeRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// addressPools is fakePools that keeps what SetNodeAddresses was told.
type addressPools struct {
	fakePools
	mu    sync.Mutex
	nodes map[netip.Addr]string
}

func (p *addressPools) SetNodeAddresses(m map[netip.Addr]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nodes = maps.Clone(m)
}

// TestDuplicateNodeAddressReservedForOldest: a compromised kubelet copies
// the victim's InternalIP into its own Node's status. Whatever order the
// Nodes are listed in (random, after every leader change), the address is
// reserved for the Node created first, never for the copier, also when
// the copier's name sorts first; the pools are told it is the victim's;
// both Nodes get a Warning Event naming the copier.
func TestDuplicateNodeAddressReservedForOldest(t *testing.T) {
	const leaders = 8 // each lists the Nodes in a random order
	addr := netip.MustParseAddr("192.0.2.10")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	node := func(name string, created time.Time, ip string) *v1.Node {
		return &v1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
			Status:     v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}},
		}
	}
	tests := []struct {
		name           string
		victim, copier string
	}{
		{name: "victim's name sorts first", victim: "node-a", copier: "node-evil"},
		{name: "copier's name sorts first", victim: "node-z", copier: "node-evil"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(
				node(tc.victim, t0, addr.String()),
				node(tc.copier, t0.Add(time.Hour), addr.String()),
				node("node-b", t0, "192.0.2.11"))
			for leader := range leaders {
				ctx, cancel := context.WithCancel(context.Background())
				factory := informers.NewSharedInformerFactory(client, 0)
				alloc, pools, rec := ipam.New(), &addressPools{}, &nodeRecorder{FakeRecorder: record.NewFakeRecorder(100)}
				b := New(alloc, pools, rec)
				b.SetInformers(factory)
				factory.Start(ctx.Done())
				go func() { _ = b.Run(ctx) }()
				deadline := time.Now().Add(10 * time.Second)
				for !b.Ready() {
					if time.Now().After(deadline) {
						t.Fatal("the balancer is not ready after 10 s")
					}
					time.Sleep(5 * time.Millisecond)
				}
				h, ok := alloc.Holder(addr)
				if !ok || !slices.Equal(h.Owners, []string{"Node " + tc.victim}) {
					t.Errorf("leader %d: %s reserved for %v (%v), want Node %s", leader, addr, h.Owners, ok, tc.victim)
				}
				pools.mu.Lock()
				if diff := cmp.Diff(map[netip.Addr]string{addr: tc.victim, netip.MustParseAddr("192.0.2.11"): "node-b"}, pools.nodes); diff != "" {
					t.Errorf("leader %d: nodes' addresses told to the pools (-want +got):\n%s", leader, diff)
				}
				pools.mu.Unlock()
				events := rec.all()
				for _, n := range []string{tc.victim, tc.copier} {
					want := n + ": Warning DuplicateNodeAddress Nodes list the same InternalIP: " + addr.String() + " (reserved for Node " + tc.victim + "; also listed by Node " + tc.copier + ")"
					if !slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, want) }) {
						t.Errorf("leader %d: no Event %q; got %q", leader, want, events)
					}
				}
				for _, e := range events {
					if strings.HasPrefix(e, "node-b: ") || strings.Contains(e, ReasonNodeAddressInUse) {
						t.Errorf("leader %d: Event %q", leader, e)
					}
				}
				cancel()
			}
		})
	}
}
