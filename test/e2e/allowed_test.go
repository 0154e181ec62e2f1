package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/ironlb/ironlb/loadbalancer"
	"github.com/ironlb/ironlb/test/rig"
)

// TestAllowedCIDRs: speakers started with --allowed-cidrs announce the VIPs
// inside them as usual and refuse one outside them, whatever the CCM says;
// the Service's Events say why.
func TestAllowedCIDRs(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{SpeakerArgs: []string{"--allowed-cidrs=192.0.2.200/30,2001:db8:100::200/126"}})
	c.applyPool("lan", l2Pool)
	c.createService(lbService("default", "inside", map[string]string{loadbalancer.AnnotationIPs: "192.0.2.201"}))
	c.createService(lbService("default", "outside", map[string]string{loadbalancer.AnnotationIPs: "192.0.2.210"}))
	checkAnnouncer(t, ctx, r, c.vip("default", "inside"))
	c.vip("default", "outside") // assigned: the pool allows it
	c.waitEvent("default", "outside", "Warning", "NoAnnouncingNode", "outside this node's --allowed-cidrs")
	if node, err := r.Reach(ctx, c.vip("default", "outside"), time.Second); err == nil {
		t.Errorf("192.0.2.210 answered by %s; no speaker may announce it", node)
	}
}
