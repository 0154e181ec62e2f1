package announced

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/klog/v2"
)

// Condition is the condition type on a Service's status that holds the
// record. Its message lists each VIP with the node announcing it,
// "192.0.2.200=node-a, 2001:db8::5=node-b" ("-" when no node may), the
// nodes advertising it over BGP ("198.51.100.7=bgp:node-a+node-b", or
// "node-a;bgp:..." for a pool announced both ways), and "@key" after a
// VIP shared under a sharing key ("192.0.2.9=node-a@shop/web"): after a
// restart, Services that shared an address keep it under the key they
// shared it by, even if one of them changed its key meanwhile. The planner
// writes it (Encode); the balancer's restore, the planner's seeding and
// `kubectl ironlb status` read it (Records, Decode).
const Condition = "ironlb.dev/Announced"

// Record is what the condition says of one VIP.
type Record struct {
	// Node announced it over layer 2 ("" for none).
	Node string
	// SharedAs is the sharing key it was shared under, "" if not shared.
	SharedAs string
}

// Records reads the Condition of a Service: where the leader that wrote
// it announced each VIP over layer 2, and under which sharing key it was
// held. It reads entries only for the addresses the Service's status
// holds: a Service's record speaks for its own VIPs, never for another's,
// whatever its text says (Decode). Entries it rejects are logged.
func Records(svc *v1.Service) map[netip.Addr]Record {
	out := map[netip.Addr]Record{}
	c := meta.FindStatusCondition(svc.Status.Conditions, Condition)
	if c == nil {
		return out
	}
	entries, err := Decode(c.Message, StatusAddrs(svc))
	if err != nil {
		klog.Background().WithName("announced").Info("Ignoring entries of a Service's record of where its VIPs are announced",
			"service", klog.KObj(svc), "condition", Condition, "err", err)
	}
	for _, e := range entries {
		var node string
		if len(e.Layer2) > 0 {
			node = e.Layer2[0]
		}
		out[e.Address] = Record{Node: node, SharedAs: e.SharedAs}
	}
	return out
}

// StatusAddrs returns the addresses in a Service's status.
func StatusAddrs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}
