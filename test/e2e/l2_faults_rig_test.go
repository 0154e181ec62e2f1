package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/test/rig"
)

// TestLayer2FaultHelpers checks the rig's fault helpers that the cut-off
// and address-in-use tests stand on, against today's speakers:
// AnsweringMACs sees the announcing node alone, a foreign host's kernel
// for its own address, and both when the foreign host takes a VIP;
// Announce's gratuitous ARP / NA is a valid one (the client's neighbour
// entry follows it); CutCCM cuts the control stream only (the CCM loses
// the speaker, the client still reaches the node) and its restore lets
// the CCM reconnect.
func TestLayer2FaultHelpers(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)

	for _, tc := range []struct {
		svc    string
		server netip.Prefix
	}{
		{"helper-ipv4", netip.MustParsePrefix("192.0.2.50/24")},
		{"helper-ipv6", netip.MustParsePrefix("2001:db8:100::50/64")},
	} {
		t.Run(tc.svc, func(t *testing.T) {
			fam, role := corev1.IPv4Protocol, "helper4"
			if tc.server.Addr().Is6() {
				fam, role = corev1.IPv6Protocol, "helper6"
			}
			c.createService(lbService("default", tc.svc, nil, singleStack(fam)))
			vip := c.vip("default", tc.svc)
			owner := r.Node(checkAnnouncer(t, ctx, r, vip))
			waitOnlyMAC(t, ctx, r, vip, owner.Host.MAC, 10*time.Second)

			server, err := r.AddForeignHost(role, tc.server)
			if err != nil {
				t.Fatal(err)
			}
			waitOnlyMAC(t, ctx, r, tc.server.Addr(), server.MAC, 10*time.Second)

			// The foreign host takes the VIP too: today's speaker goes on
			// answering, so two MACs answer; the client's entry follows
			// the foreign host's gratuitous announcement.
			bits := 24
			if vip.Is6() {
				bits = 64
			}
			if err := server.AddAddr(netip.PrefixFrom(vip, bits)); err != nil {
				t.Fatal(err)
			}
			if err := server.Announce(vip); err != nil {
				t.Fatal(err)
			}
			err = rig.Eventually(5*time.Second, func() error {
				neigh, err := r.Client.Neighbors()
				if err != nil {
					return err
				}
				if got := neigh[vip]; got.String() != server.MAC.String() {
					return fmt.Errorf("the client resolves %s to %s after the gratuitous announcement, want %s", vip, got, server.MAC)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			macs, err := r.AnsweringMACs(ctx, vip, 100*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s answered by %s", vip, macNames(r, macs))
			if len(macs) < 1 || len(macs) > 2 {
				t.Errorf("%s answered by %s, want the foreign host and at most %s", vip, macNames(r, macs), owner.Name)
			}
			if err := server.Remove(); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("CutCCM", func(t *testing.T) {
		n := r.Node("node-b")
		waitMetrics(t, ctx, r, 20*time.Second, `ironlb_speaker_connected{node="node-b"} 1`)
		restore, err := r.CutCCM(n)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = restore() })
		waitMetrics(t, ctx, r, 20*time.Second, `ironlb_speaker_connected{node="node-b"} 0`)
		// The LAN stays up: the client still reaches the node's speaker.
		if _, err := r.SpeakerMetrics(ctx, n); err != nil {
			t.Errorf("the client cannot reach node-b's speaker while it is cut off from the CCM: %v", err)
		}
		if err := restore(); err != nil {
			t.Fatal(err)
		}
		waitMetrics(t, ctx, r, 20*time.Second, `ironlb_speaker_connected{node="node-b"} 1`)
	})
}
