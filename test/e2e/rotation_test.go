package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/test/rig"
)

// TestCARotation follows the rotation of docs/control-channel.md: copy ironlb-ca to
// ironlb-ca-previous, delete ironlb-ca. The CCM makes a new CA at once,
// trusts both, and renews every speaker's node certificate from the new CA
// on its open stream, sending the new bundle with it: no stream breaks,
// although the speakers' mounted bundle (the kubelet's copy of the
// ConfigMap) still holds only the old CA. A speaker restarted meanwhile
// still trusts only the old CA and is reached with the CCM's certificate
// from it. Deleting ironlb-ca-previous ends the overlap; the speakers,
// which learnt the new CA in-band, stay connected. A VIP answers
// throughout.
func TestCARotation(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)
	c.createService(lbService("default", "web", nil))
	vip := c.vip("default", "web")
	owner := checkAnnouncer(t, ctx, r, vip)
	others := othersThan(owner) // the speakers restarted below: the VIP stays put
	all := []string{`ironlb_speaker_connected{node="node-a"} 1`, `ironlb_speaker_connected{node="node-b"} 1`, `ironlb_speaker_connected{node="node-c"} 1`}
	waitMetrics(t, ctx, r, 30*time.Second, all...)
	secrets := c.cp.Client.CoreV1().Secrets(r.SecretNamespace())
	old, err := secrets.Get(ctx, pki.CASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldCA := certOf(t, old.Data[pki.CACertKey])
	lost := func() int { return strings.Count(r.CCM.Log(), "Speaker lost") }
	lostBefore := lost()
	installed := func(n *rig.L2Node) int { return strings.Count(n.Speaker.Log(), "installed node certificate") }
	before := map[string]int{}
	for _, n := range r.Nodes {
		before[n.Name] = installed(n)
	}
	stopProbe := probeVIP(ctx, r, vip)

	// Rotate.
	prev := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: pki.PreviousCASecretName, Namespace: old.Namespace}, Type: old.Type, Immutable: ptr.To(true), Data: old.Data}
	if _, err := secrets.Create(ctx, prev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := secrets.Delete(ctx, pki.CASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var newCA *x509.Certificate
	err = rig.Eventually(30*time.Second, func() error {
		s, err := secrets.Get(ctx, pki.CASecretName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		newCA = certOf(t, s.Data[pki.CACertKey])
		if newCA.Equal(oldCA) {
			return errors.New("still the old CA")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every speaker gets a new-CA certificate on its open stream.
	err = rig.Eventually(30*time.Second, func() error {
		for _, n := range r.Nodes {
			if installed(n) == before[n.Name] {
				return fmt.Errorf("%s has no new node certificate yet", n.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, r.CCM.Tail(20))
	}
	if got := lost() - lostBefore; got != 0 {
		t.Errorf("%d speaker streams broke during the rotation, want none", got)
	}
	// The speakers' mounted bundle still has only the old CA (no kubelet
	// here): a restarted speaker must still be reached.
	nodeC := r.Node(others[0])
	if b, err := os.ReadFile(filepath.Join(nodeC.TLSDir, pki.CACertKey)); err != nil || !certOf(t, b).Equal(oldCA) {
		t.Fatalf("%s's mounted bundle is not the old CA alone (%v)", nodeC.Name, err)
	}
	if err := nodeC.Speaker.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := r.StartSpeaker(ctx, nodeC); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, ctx, r, 20*time.Second, all...)
	lostBefore = lost()

	// End the overlap.
	if err := secrets.Delete(ctx, pki.PreviousCASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, ctx, r, 20*time.Second, "ironlb_ca_trusted 1")
	if got := lost() - lostBefore; got != 0 {
		t.Errorf("%d speaker streams broke when the overlap ended, want none", got)
	}
	// New connections now need the new CA on both sides. The docs say
	// to end the overlap once the kubelet has updated the mounted bundle;
	// do what the kubelet does, then restart another speaker.
	for _, n := range r.Nodes {
		cm, err := c.cp.Client.CoreV1().ConfigMaps(r.SecretNamespace()).Get(ctx, pki.BundleConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteBundle(filepath.Join(n.TLSDir, pki.CACertKey), []byte(cm.Data[pki.CACertKey])); err != nil {
			t.Fatal(err)
		}
	}
	nodeA := r.Node(others[1])
	if err := nodeA.Speaker.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := r.StartSpeaker(ctx, nodeA); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, ctx, r, 20*time.Second, all...)
	failed, probes := stopProbe()
	t.Logf("%d of %d probes of %s (every 50 ms) failed during the rotation", failed, probes, vip)
	if failed > 0 {
		t.Errorf("%d probes of %s failed during the rotation", failed, vip)
	}
}

// certOf parses the first PEM certificate of b.
func certOf(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// probeVIP reaches vip from the client every 50 ms until the returned
// function is called, which returns how many probes failed, of how many.
func probeVIP(ctx context.Context, r *rig.L2, vip netip.Addr) func() (int, int) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan [2]int)
	go func() {
		failed, probes := 0, 0
		for ctx.Err() == nil {
			_, err := r.Reach(ctx, vip, time.Second)
			if ctx.Err() != nil {
				break
			}
			probes++
			if err != nil {
				failed++
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		done <- [2]int{failed, probes}
	}()
	return func() (int, int) {
		cancel()
		r := <-done
		return r[0], r[1]
	}
}

// TestCorruptCA: a CA Secret replaced by garbage does not take the CCM
// down. While it runs, the CCM keeps its streams (a new Service is still
// announced), reports the Secret with a Warning Event InvalidCA and
// ironlb_ca_valid 0. A CCM started with the corrupt Secret stays up
// (no crash loop) and the speakers keep announcing. Once the Secret is
// deleted the CCM makes a new CA and, when the speakers' bundle has it
// (the kubelet's part, done by hand here), enrolls them again.
func TestCorruptCA(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)
	all := []string{`ironlb_speaker_connected{node="node-a"} 1`, `ironlb_speaker_connected{node="node-b"} 1`, `ironlb_speaker_connected{node="node-c"} 1`}
	waitMetrics(t, ctx, r, 30*time.Second, all...)
	ns := r.SecretNamespace()
	secrets := c.cp.Client.CoreV1().Secrets(ns)
	lostBefore := strings.Count(r.CCM.Log(), "Speaker lost")

	corrupt := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: pki.CASecretName, Namespace: ns}, Data: map[string][]byte{pki.CACertKey: []byte("garbage"), pki.CAKeyKey: []byte("garbage")}}
	if err := secrets.Delete(ctx, pki.CASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Create(ctx, corrupt, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := rig.Eventually(30*time.Second, func() error {
		return findEvent(ctx, c.cp, "Secret", pki.CASecretName, ns, corev1.EventTypeWarning, pki.ReasonInvalidCA, "is invalid")
	})
	if err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, ctx, r, 20*time.Second, "ironlb_ca_valid 0")
	c.createService(lbService("default", "web", nil))
	vip := c.vip("default", "web")
	checkAnnouncer(t, ctx, r, vip)
	if got := strings.Count(r.CCM.Log(), "Speaker lost") - lostBefore; got != 0 {
		t.Errorf("%d speaker streams broke over the corrupt CA, want none", got)
	}

	// A CCM that starts with it stays up; the speakers keep announcing.
	if err := r.CCM.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = r.CCM.Wait(5 * time.Second)
	if err := r.StartCCM("ironlb-ccm-2", false); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, ctx, r, 30*time.Second, "ironlb_ca_valid 0")
	if r.CCM.Exited() {
		t.Fatalf("the CCM exited over the corrupt CA:\n%s", r.CCM.Tail(20))
	}
	checkAnnouncer(t, ctx, r, vip)

	// Repaired: a new CA; the speakers' mounted bundle gets it (kubelet);
	// they enroll again.
	if err := secrets.Delete(ctx, pki.CASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, ctx, r, 30*time.Second, "ironlb_ca_valid 1")
	cm, err := c.cp.Client.CoreV1().ConfigMaps(ns).Get(ctx, pki.BundleConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range r.Nodes {
		if err := pki.WriteBundle(filepath.Join(n.TLSDir, pki.CACertKey), []byte(cm.Data[pki.CACertKey])); err != nil {
			t.Fatal(err)
		}
	}
	waitMetrics(t, ctx, r, 30*time.Second, all...)
	checkAnnouncer(t, ctx, r, vip)
}
