package planner

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The planner records where each VIP is announced in a condition on its
// Service's status, so that `kubectl get svc -o yaml` answers "where is my
// VIP?" and a new leader keeps every VIP where it is. A status condition
// rather than an annotation: the service controller syncs a Service again
// (EnsureLoadBalancer and two Events) whenever its annotations change, not
// when its status does.

// ConditionAnnounced is the condition type on a Service's status. Its
// message lists each VIP with the node announcing it,
// "192.0.2.200=node-a, 2001:db8::5=node-b" ("-" when no node may), the
// nodes advertising it over BGP ("198.51.100.7=bgp:node-a+node-b", or
// "node-a;bgp:..." for a pool announced both ways), and
// "@key" after a VIP shared under a sharing key ("192.0.2.9=node-a@web"):
// after a restart, Services that shared an address keep it under the key
// they shared it by, even if one of them changed its key meanwhile.
const ConditionAnnounced = "ironlb.dev/Announced"

// Reasons of ConditionAnnounced.
const (
	ReasonAllAnnounced = "Announced"
	// ReasonNoAnnouncer (NoAnnouncingNode) is also the Event's reason.
)

// recordAnnouncers writes ConditionAnnounced on the Service when it changed.
func (p *Planner) recordAnnouncers(key string) error {
	if p.opts.Client == nil {
		return nil
	}
	ns, name, _ := strings.Cut(key, "/")
	svc, err := p.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	msg, all, some := p.announcedBy(key)
	cur := meta.FindStatusCondition(svc.Status.Conditions, ConditionAnnounced)
	var patch map[string]any
	switch {
	case !some && cur == nil:
		return nil
	case !some:
		patch = map[string]any{"status": map[string]any{"conditions": []any{
			map[string]any{"type": ConditionAnnounced, "$patch": "delete"},
		}}}
	default:
		c := metav1.Condition{
			Type: ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonAllAnnounced,
			Message: msg, ObservedGeneration: svc.Generation,
		}
		if !all {
			c.Status, c.Reason = metav1.ConditionFalse, ReasonNoAnnouncer
		}
		if cur != nil && cur.Status == c.Status && cur.Reason == c.Reason && cur.Message == c.Message {
			return nil
		}
		c.LastTransitionTime = metav1.NewTime(time.Now())
		if cur != nil && cur.Status == c.Status {
			c.LastTransitionTime = cur.LastTransitionTime
		}
		patch = map[string]any{"status": map[string]any{"conditions": []any{c}}}
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = p.opts.Client.CoreV1().Services(ns).Patch(ctx, name, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		p.log.V(2).Info("Recorded where the Service's VIPs are announced", "service", key, "announced", msg)
	}
	return err
}

// announcedBy is the condition's message for a Service: each VIP with the
// nodes announcing it, "-" for none. It also reports whether every VIP has
// an announcer and whether the Service has any VIP.
func (p *Planner) announcedBy(key string) (msg string, all, some bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	all = true
	for _, a := range p.bySvc[key] {
		owner := "-"
		if v := p.vips[a]; v != nil {
			owner = owners(v)
		}
		if owner == "-" {
			all = false
		}
		entry := a.String() + "=" + owner
		if h, ok := p.alloc.Holder(a); ok && h.SharingKey != "" {
			entry += "@" + h.SharingKey
		}
		parts = append(parts, entry)
	}
	return strings.Join(parts, ", "), all, len(parts) > 0
}

// owners is how the condition names where v is: "node-a" (layer 2),
// "bgp:node-a+node-b" (BGP), both as "node-a;bgp:node-a+node-b", or "-"
// for nowhere.
func owners(v *vip) string {
	var parts []string
	if len(v.announcers) > 0 {
		parts = append(parts, strings.Join(v.announcers, "+"))
	}
	if len(v.advertisers) > 0 {
		parts = append(parts, "bgp:"+strings.Join(v.advertisers, "+"))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ";")
}

// Record is what ConditionAnnounced says of one VIP.
type Record struct {
	// Node announced it ("" for none).
	Node string
	// SharedAs is the sharing key it was shared under, "" if not shared.
	SharedAs string
}

// Records reads ConditionAnnounced of a Service: where the leader that
// wrote it announced each VIP, and under which sharing key it was held.
func Records(svc *v1.Service) map[netip.Addr]Record {
	out := map[netip.Addr]Record{}
	c := meta.FindStatusCondition(svc.Status.Conditions, ConditionAnnounced)
	if c == nil {
		return out
	}
	for _, part := range strings.Split(c.Message, ",") {
		addr, rest, ok := strings.Cut(strings.TrimSpace(part), "=")
		a, err := netip.ParseAddr(addr)
		if !ok || err != nil {
			continue
		}
		nodes, shared, _ := strings.Cut(rest, "@")
		l2, _, _ := strings.Cut(nodes, ";")
		node, _, _ := strings.Cut(l2, "+")
		if node == "-" || strings.HasPrefix(node, "bgp:") {
			node = "" // not announced over layer 2
		}
		out[a] = Record{Node: node, SharedAs: shared}
	}
	return out
}
