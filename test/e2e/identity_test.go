package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ironlb/ironlb/test/rig"
)

// TestSpeakerIdentity: every speaker enrolls with a token bound to its own
// node and gets a certificate naming that node. The token is no credential
// for the Kubernetes API. A speaker whose token belongs to another node
// (node-b's token on node-a: a stolen token, or a node answering for
// another) is refused: the CCM sends it nothing and moves node-a's VIPs
// away; given its own token back, it enrolls and serves again.
func TestSpeakerIdentity(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)
	waitMetrics(t, ctx, r, 30*time.Second, `ironlb_speaker_connected{node="node-a"} 1`, `ironlb_speaker_connected{node="node-b"} 1`, `ironlb_speaker_connected{node="node-c"} 1`)
	m, err := r.CCMMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := metricValue(m, `ironlb_speaker_enrollments_total{result="Enrolled"}`); got < 3 {
		t.Errorf("%v enrollments, want one per speaker (3)", got)
	}
	nodeA := r.Node("node-a")
	tokenFile := filepath.Join(nodeA.TLSDir, "token")
	own, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the enrollment token is no API credential", func(t *testing.T) {
		cfg := rest.AnonymousClientConfig(c.cp.Config)
		cfg.BearerToken = strings.TrimSpace(string(own))
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if !apierrors.IsUnauthorized(err) {
			t.Errorf("listing namespaces with a speaker's token: %v, want 401 Unauthorized", err)
		}
	})

	t.Run("a token of another node is refused", func(t *testing.T) {
		c.createService(lbService("default", "web", nil))
		vip := c.vip("default", "web")
		checkAnnouncer(t, ctx, r, vip)
		// node-a's speaker restarts holding the token of node-b's pod.
		stolen, err := r.SpeakerToken(ctx, "node-b", "node-b")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile, []byte(stolen), 0o600); err != nil {
			t.Fatal(err)
		}
		installed := func() int { return strings.Count(nodeA.Speaker.Log(), "installed node certificate") }
		before := installed() // the log file goes on across restarts
		if err := nodeA.Speaker.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := r.StartSpeaker(ctx, nodeA); err != nil {
			t.Fatal(err)
		}
		if err := r.CCM.WaitForLog(`reason="WrongNode"`, 30*time.Second); err != nil {
			t.Fatalf("the CCM did not refuse node-a's speaker holding node-b's token: %v\n%s", err, r.CCM.Tail(30))
		}
		waitMetrics(t, ctx, r, 10*time.Second, `ironlb_speaker_connected{node="node-a"} 0`, `ironlb_speaker_enrollments_total{result="WrongNode"}`)
		if got, err := r.Announcing(ctx, nodeA); err != nil || len(got) != 0 {
			t.Errorf("node-a's refused speaker announces %v (%v); the CCM must send it nothing", got, err)
		}
		waitAnnouncer(t, ctx, r, vip, othersThan("node-a")...)
		if installed() != before {
			t.Error("node-a's refused speaker was given a certificate")
		}

		// Its own token back: it enrolls and serves again.
		if err := os.WriteFile(tokenFile, own, 0o600); err != nil {
			t.Fatal(err)
		}
		err = rig.Eventually(30*time.Second, func() error {
			if installed() == before {
				return errors.New("node-a's speaker has no node certificate yet")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, r.CCM.Tail(20))
		}
		waitMetrics(t, ctx, r, 20*time.Second, `ironlb_speaker_connected{node="node-a"} 1`)
	})
}
