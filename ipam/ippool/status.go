package ippool

import (
	"fmt"
	"maps"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

// Status computes a pool's status from the allocator's counts, the other
// pools, the Nodes' InternalIPs (address → node name) and the
// control-plane VIPs (address → where IronLB learnt it).
func Status(p *v1alpha1.IPPool, others []*v1alpha1.IPPool, nodeIPs, cpVIPs map[netip.Addr]string, v4, v6 ipam.PoolStats) v1alpha1.IPPoolStatus {
	status := v1alpha1.IPPoolStatus{
		ObservedGeneration: p.Generation,
		Conditions:         slices.Clone(p.Status.Conditions),
	}
	set := func(typ string, ok bool, reason, msg string) {
		cs := metav1.ConditionFalse
		if ok {
			cs = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: typ, Status: cs, Reason: reason, Message: msg, ObservedGeneration: p.Generation,
		})
	}
	pool, err := ToPool(p)
	if err != nil {
		set(v1alpha1.ConditionReady, false, v1alpha1.ReasonInvalid, err.Error()+"; the pool hands out no addresses, Services keep those they hold")
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionConflicting)
		return status
	}
	if v4.Total != nil {
		status.IPv4 = counts(v4)
		status.Used += int64(v4.Used)
	}
	if v6.Total != nil {
		status.IPv6 = counts(v6)
		status.Used += int64(v6.Used)
	}
	set(v1alpha1.ConditionReady, true, v1alpha1.ReasonValid, fmt.Sprintf("%s IPv4 and %s IPv6 addresses to hand out", total(v4), total(v6)))

	var overlaps []string
	for _, o := range others {
		other, err := ToPool(o)
		if err != nil {
			continue
		}
		if common := ipam.Overlap(pool.Ranges, other.Ranges); len(common) > 0 {
			var rs []string
			for _, r := range common {
				rs = append(rs, r.String())
			}
			overlaps = append(overlaps, fmt.Sprintf("%s (%s)", o.Name, strings.Join(rs, ", ")))
		}
	}
	slices.Sort(overlaps)
	var nodes []string
	for a, node := range nodeIPs {
		if slices.ContainsFunc(pool.Ranges, func(r ipam.Range) bool { return r.Contains(a) }) {
			nodes = append(nodes, fmt.Sprintf("%s of Node %s", a, node))
		}
	}
	slices.Sort(nodes)
	var msgs []string
	reason := v1alpha1.ReasonNoOverlap
	if len(nodes) > 0 {
		reason = v1alpha1.ReasonNodeAddress
		msgs = append(msgs, "contains the InternalIP "+strings.Join(nodes, ", ")+"; IronLB never hands it out")
	}
	if cp := ControlPlaneMessage(pool, cpVIPs); cp != "" {
		reason = v1alpha1.ReasonControlPlaneVIP
		msgs = append(msgs, cp)
	}
	if len(overlaps) > 0 {
		reason = v1alpha1.ReasonOverlap
		msgs = append([]string{"overlaps IPPool " + strings.Join(overlaps, "; ") + "; each shared address is still handed out at most once, and only to Services that every IPPool containing it allows"}, msgs...)
	}
	if len(msgs) > 0 {
		set(v1alpha1.ConditionConflicting, true, reason, strings.Join(msgs, "; it also "))
	} else {
		set(v1alpha1.ConditionConflicting, false, reason, "no overlap with other IPPools or Nodes' addresses")
	}
	return status
}

// ControlPlaneMessage says which control-plane VIPs (address → where
// IronLB learnt it) pool covers; "" for none.
func ControlPlaneMessage(pool ipam.Pool, cpVIPs map[netip.Addr]string) string {
	var vips []string
	for _, a := range slices.SortedFunc(maps.Keys(cpVIPs), netip.Addr.Compare) {
		if slices.ContainsFunc(pool.Ranges, func(r ipam.Range) bool { return r.Contains(a) }) {
			vips = append(vips, fmt.Sprintf("%s (from %s)", a, cpVIPs[a]))
		}
	}
	if len(vips) == 0 {
		return ""
	}
	return "contains the control-plane VIP " + strings.Join(vips, ", ") + "; IronLB never hands it out (exclude it from the pool)"
}

func counts(s ipam.PoolStats) *v1alpha1.AddressCounts {
	if s.Total.Sign() == 0 {
		return nil
	}
	return &v1alpha1.AddressCounts{Total: s.Total.String(), Used: int64(s.Used), Free: s.Free.String()}
}

func total(s ipam.PoolStats) string {
	if s.Total == nil {
		return "0"
	}
	return new(big.Int).Set(s.Total).String()
}
