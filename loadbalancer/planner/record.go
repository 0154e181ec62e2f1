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
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/loadbalancer/announced"
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
// "@key" after a VIP shared under a sharing key ("192.0.2.9=node-a@shop/web"):
// after a restart, Services that shared an address keep it under the key
// they shared it by, even if one of them changed its key meanwhile. The
// package announced writes and reads it: every field is checked, and a key
// is escaped so that no text in it can read as another entry.
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
	msg, all, some, err := p.announcedBy(key)
	if err != nil {
		// Node names and addresses are the API's; this cannot happen.
		p.log.Error(err, "Cannot record where the Service's VIPs are announced", "service", key)
		return nil
	}
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
// nodes announcing it, "-" for none (announced.Encode). It also reports
// whether every VIP has an announcer and whether the Service has any VIP.
func (p *Planner) announcedBy(key string) (msg string, all, some bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var entries []announced.Entry
	all = true
	for _, a := range p.bySvc[key] {
		e := announced.Entry{Address: a}
		if v := p.vips[a]; v != nil {
			e.Layer2, e.BGP = v.announcers, v.advertisers
		}
		if len(e.Layer2) == 0 && len(e.BGP) == 0 {
			all = false
		}
		if h, ok := p.alloc.Holder(a); ok && h.SharingKey != "" {
			e.SharedAs = h.SharingKey
			if len(e.SharedAs) > announced.MaxKeyLen {
				// Only a key restored from before keys were checked can
				// be this long; the sharers keep it through their
				// annotations (ipam.Sharing.Aliases).
				p.log.Info("Not recording an over-long sharing key", "service", key, "address", a, "bytes", len(e.SharedAs))
				e.SharedAs = ""
			}
		}
		entries = append(entries, e)
	}
	msg, err = announced.Encode(entries)
	return msg, all, len(entries) > 0, err
}

// Record is what ConditionAnnounced says of one VIP.
type Record struct {
	// Node announced it ("" for none).
	Node string
	// SharedAs is the sharing key it was shared under, "" if not shared.
	SharedAs string
}

// Records reads ConditionAnnounced of a Service: where the leader that
// wrote it announced each VIP over layer 2, and under which sharing key it
// was held. It reads entries only for the addresses the Service's status
// holds: a Service's record speaks for its own VIPs, never for another's,
// whatever its text says (announced.Decode). Entries it rejects are
// logged.
func Records(svc *v1.Service) map[netip.Addr]Record {
	out := map[netip.Addr]Record{}
	c := meta.FindStatusCondition(svc.Status.Conditions, ConditionAnnounced)
	if c == nil {
		return out
	}
	entries, err := announced.Decode(c.Message, statusAddrs(svc))
	if err != nil {
		klog.Background().WithName("planner").Info("Ignoring entries of a Service's record of where its VIPs are announced",
			"service", klog.KObj(svc), "condition", ConditionAnnounced, "err", err)
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

// statusAddrs returns the addresses in a Service's status.
func statusAddrs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}
