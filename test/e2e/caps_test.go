package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/test/rig"
)

// capNetRaw is CAP_NET_RAW's bit in /proc/pid/status.
const capNetRaw = 1 << 13

// TestSpeakerNetRawOnly: a speaker holding CAP_NET_RAW and nothing else
// (the DaemonSet's securityContext) answers ARP and NDP, fails over, and
// runs BGP with TCP MD5 and BFD against FRR: NET_ADMIN is not needed.
func TestSpeakerNetRawOnly(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, b := newBGP(t, ctx, rig.L2Options{SpeakerCapabilities: "net_raw"}, " neighbor nodes password s3cret-pw\n")
	for _, n := range b.Nodes {
		if eff, err := procCaps(n.Speaker.Pid()); err != nil || eff != capNetRaw {
			t.Fatalf("%s's speaker has effective capabilities %#x (%v), want only CAP_NET_RAW (%#x)", n.Name, eff, err, capNetRaw)
		}
	}
	t.Run("layer 2: ARP, NDP and failover", func(t *testing.T) {
		c.applyPool("lan", l2Pool)
		c.createService(lbService("default", "v4", map[string]string{"ironlb.dev/pool": "lan"}))
		c.createService(lbService("default", "v6", map[string]string{"ironlb.dev/pool": "lan"}, func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}))
		checkAnnouncer(t, ctx, b.L2, c.vip("default", "v6"))
		f, err := b.MeasureFailover(ctx, c.vip("default", "v4"), rig.Crash)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("failover %s → %s: cut off %s", f.From, f.To, f.Outage)
	})
	t.Run("BGP with TCP MD5, and BFD", func(t *testing.T) {
		doc := fmt.Sprintf("apiVersion: v1\nkind: Secret\ntype: ironlb.dev/bgp-password\nmetadata:\n  name: tor-pw\n  namespace: %s\nstringData:\n  password: s3cret-pw\n", b.SecretNamespace())
		if out, err := c.cp.KubectlStdin(ctx, doc, "apply", "-f", "-"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if err := b.RouterBFD(ctx, 100, 100); err != nil {
			t.Fatal(err)
		}
		c.applyPeer("tor", torSpec("\n  passwordSecretRef: {name: tor-pw}\n  bfd: {enabled: true, receiveInterval: 100ms, transmitInterval: 100ms}"))
		c.applyPool("bgp", bgpPool)
		c.createService(lbService("default", "web", map[string]string{"ironlb.dev/pool": "bgp"}))
		vip := c.vip("default", "web")
		if _, err := b.WaitNextHops(host(vip), nodeHops(b, false), 60*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := waitBFD(ctx, b.Router, nodeHops(b, false), 100, 100, 3); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReachFromOutside(ctx, vip, 2*time.Second); err != nil {
			t.Error(err)
		}
	})
}

// procCaps returns the effective capabilities of process pid.
func procCaps(pid int) (uint64, error) {
	v, err := procStatusField(pid, "CapEff")
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(v, 16, 64)
}
