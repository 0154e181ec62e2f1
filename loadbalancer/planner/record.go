package planner

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/loadbalancer/announced"
)

// The planner records where each VIP is announced in a condition on its
// Service's status, so that `kubectl get svc -o yaml` answers "where is my
// VIP?" and a new leader keeps every VIP where it is. A status condition
// rather than an annotation: the service controller syncs a Service again
// (EnsureLoadBalancer and two Events) whenever its annotations change, not
// when its status does.

// ConditionAnnounced is the condition the planner writes on a Service's
// status: announced.Condition, whose message announced.Encode writes and
// announced.Records and announced.Decode read (every field is checked, and
// a sharing key is escaped so that no text in it can read as another
// entry).
const ConditionAnnounced = announced.Condition

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
