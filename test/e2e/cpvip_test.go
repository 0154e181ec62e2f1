package e2e

import (
	"context"
	"testing"
	"time"
)

// TestControlPlaneVIP runs three control-plane nodes, each with the real
// ironlb-speaker control-plane and a stand-in kube-apiserver, on one LAN
// with a client, and checks the layer-2 election of the control-plane VIP.
func TestControlPlaneVIP(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newCPRig(t, ctx, 3)

	t.Run("one holder", func(t *testing.T) {
		r.t = t
		h := r.waitOneHolder(15 * time.Second)
		if h.name != "cp1" {
			t.Errorf("holder %s, want cp1 (the lowest node IP; all started at once)", h.name)
		}
		got, err := r.reach(2 * time.Second)
		if err != nil || got != h.name {
			t.Errorf("HTTPS to the VIP answered by %q (%v), want %s", got, err, h.name)
		}
	})
}
