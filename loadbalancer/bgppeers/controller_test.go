package bgppeers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
)

// recordingSpeakers keeps the last BGP set-up each node's speaker was
// given (the test gives them as the planner does); no speaker is
// connected.
type recordingSpeakers struct {
	mu  sync.Mutex
	bgp map[string]*speakerv1.BGPConfig
}

func (s *recordingSpeakers) View(string) (speakers.State, bool) { return speakers.State{}, false }
func (s *recordingSpeakers) OnChange(func(string))              {}
func (s *recordingSpeakers) OnBGPChange(func(string))           {}
func (s *recordingSpeakers) SetBGP(node string, cfg *speakerv1.BGPConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bgp == nil {
		s.bgp = map[string]*speakerv1.BGPConfig{}
	}
	s.bgp[node] = proto.Clone(cfg).(*speakerv1.BGPConfig)
}

func (s *recordingSpeakers) get(node string) *speakerv1.BGPConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bgp[node]
}

// TestControllerPasswordSecrets runs the controller against a real API
// server with the CCM's own RBAC (deploy/ccm) and the attack of issue 20,
// finding 1: BGPPeers pointing at IronLB's CA, at an Opaque Secret, at a
// Secret that does not exist and at a key that does not exist. None of
// their content may reach a speaker's set-up, every one gets the same
// status, the legitimate peer works, and the controller's Secret cache
// holds BGP password Secrets only.
func TestControllerPasswordSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	const ns = "ironlb-system"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	deploy := filepath.Join(root, "deploy")
	crdPath := filepath.Join(deploy, "crds", "ironlb.dev_bgppeers.yaml")
	crd, err := os.ReadFile(crdPath)
	if err != nil {
		t.Fatal(err)
	}
	// First a CRD of an older version, which let a BGPPeer name IronLB's
	// own Secrets: the controller must refuse them by itself.
	if out, err := cp.KubectlStdin(ctx, withoutOwnNameRule(string(crd)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("installing the BGPPeer CRD: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"wait", "--for=condition=Established", "--timeout=60s", "crd/bgppeers.ironlb.dev"},
		{"apply", "--server-side", "-f", filepath.Join(deploy, "namespace.yaml"), "-f", filepath.Join(deploy, "ccm", "serviceaccount.yaml"), "-f", filepath.Join(deploy, "ccm", "rbac.yaml")},
	} {
		if out, err := cp.Kubectl(ctx, args...); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, ns, "ironlb-ccm")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// The Secrets, as an admin creates them.
	for _, s := range []*v1.Secret{
		secretOf("ironlb-ca", v1.SecretTypeOpaque, map[string]string{"ca.crt": "CERT", "ca.key": caKeyPEM}),
		secretOf("ironlb-ca-previous", bgpPasswordType, map[string]string{"ca.key": "IronLBPreviousCAKey"}),
		secretOf("plain", v1.SecretTypeOpaque, map[string]string{"password": "OpaquePassword"}),
		secretOf("tor-pw", bgpPasswordType, map[string]string{"password": "s3cret"}),
		secretOf("newline", bgpPasswordType, map[string]string{"password": "NewlinePassword\n"}),
	} {
		if _, err := cp.Client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	leaks := []string{"IRONLBCAPRIVATEKEY", "CERT", "IronLBPreviousCAKey", "OpaquePassword", "NewlinePassword"}
	n, err := cp.Client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "192.0.2.11"}}
	if _, err := cp.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The BGPPeers, as whoever may write BGPPeers writes them: name →
	// Secret and key.
	refs := map[string][2]string{
		"good":         {"tor-pw", "password"},
		"ca-key":       {"ironlb-ca", "ca.key"},
		"ca-previous":  {"ironlb-ca-previous", "ca.key"},
		"opaque":       {"plain", "password"},
		"missing":      {"nope", "password"},
		"missing-key":  {"tor-pw", "other"},
		"newline":      {"newline", "password"},
		"ca-cert-name": {"ironlb-ca", "ca.crt"},
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range refs {
			if !yield(k) {
				return
			}
		}
	})
	peers := dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.BGPPeerResource)
	for i, name := range names {
		ref := refs[name]
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "ironlb.dev/v1alpha1", "kind": "BGPPeer", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"peerAddress": fmt.Sprintf("192.0.2.%d", i+1), "peerASN": int64(64512), "myASN": int64(64513),
				"passwordSecretRef": map[string]any{"name": ref[0], "key": ref[1]}},
		}}
		if _, err := peers.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("BGPPeer %s: %v", name, err)
		}
	}

	sp := &recordingSpeakers{}
	c, err := New(dyn, client, ns, sp, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// What the planner does with the set-ups (planner.configureSessions):
	// every node's goes to its speaker.
	c.OnChange(func() {
		for node, cfg := range c.BGPConfigs() {
			sp.SetBGP(node, cfg)
		}
	})
	factory := informers.NewSharedInformerFactory(client, time.Hour)
	c.SetNodeInformer(factory)
	factory.Start(ctx.Done())
	go c.Run(ctx)

	// Wait for every BGPPeer's status: the set-up was given before.
	statuses := map[string]v1alpha1.BGPPeerStatus{}
	for len(statuses) < len(refs) {
		select {
		case <-ctx.Done():
			t.Fatalf("statuses of %d BGPPeers, want %d: %v", len(statuses), len(refs), statuses)
		case <-time.After(100 * time.Millisecond):
		}
		for name := range refs {
			u, err := peers.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p, err := v1alpha1.FromUnstructured[v1alpha1.BGPPeer](u)
			if err != nil {
				t.Fatal(err)
			}
			if c := meta.FindStatusCondition(p.Status.Conditions, "Ready"); c != nil && c.ObservedGeneration == p.Generation {
				statuses[name] = p.Status
			}
		}
	}

	got := sp.get("node-a")
	sent := prototext.Format(got)
	for _, l := range leaks {
		if strings.Contains(sent, l) {
			t.Errorf("node-a's speaker is sent %q:\n%s", l, sent)
		}
	}
	if ps := got.GetPeers(); len(ps) != 1 || ps[0].GetName() != "good" || ps[0].GetPassword() != "s3cret" {
		t.Errorf("node-a's peers:\n%s\nwant only \"good\" with its password", sent)
	}

	var first, firstReason string
	for name, st := range statuses {
		ready := meta.FindStatusCondition(st.Conditions, "Ready")
		if name == "good" {
			if ready.Status != metav1.ConditionTrue {
				t.Errorf("BGPPeer good: Ready %+v", ready)
			}
			continue
		}
		ref := refs[name]
		msg := strings.ReplaceAll(ready.Message, strconv.Quote(ref[0]), `"NAME"`)
		msg = strings.ReplaceAll(msg, strconv.Quote(ref[1]), `"KEY"`)
		if ready.Status != metav1.ConditionFalse {
			t.Errorf("BGPPeer %s: Ready %+v, want False", name, ready)
		}
		if first == "" {
			first, firstReason = msg, ready.Reason
		}
		if msg != first || ready.Reason != firstReason {
			t.Errorf("BGPPeer %s: Ready %s %q, another %s %q: the status tells what the Secret is", name, ready.Reason, msg, firstReason, first)
		}
		for _, s := range st.Sessions {
			if s.LastError != ready.Message {
				t.Errorf("BGPPeer %s: node %s's last error %q, want the condition's message", name, s.Node, s.LastError)
			}
		}
	}

	// The controller's cache of Secrets holds BGP password Secrets only.
	var cached []string
	for _, o := range c.secretsI.GetStore().List() {
		s := o.(*v1.Secret)
		cached = append(cached, s.Name+"="+string(s.Type))
	}
	slices.Sort(cached)
	want := []string{"ironlb-ca-previous=" + string(bgpPasswordType), "newline=" + string(bgpPasswordType), "tor-pw=" + string(bgpPasswordType)}
	if !slices.Equal(cached, want) {
		t.Errorf("the controller caches Secrets %q, want only %q", cached, want)
	}

	// Today's CRD refuses a BGPPeer naming one of IronLB's own Secrets
	// at once.
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-f", crdPath); err != nil {
		t.Fatalf("installing the BGPPeer CRD: %v\n%s", err, out)
	}
	for _, own := range []string{"ironlb-ca", "ironlb-ca-previous", "ironlb-speaker-tls", "ironlb-metrics-reader"} {
		out, err := cp.KubectlStdin(ctx, "apiVersion: ironlb.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: own}\nspec: {peerAddress: 192.0.2.99, peerASN: 64512, myASN: 64513, passwordSecretRef: {name: "+own+"}}\n",
			"create", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(out, "IronLB's own Secrets") {
			t.Errorf("a BGPPeer naming Secret %s: %v\n%s\nwant refused by the CRD", own, err, out)
		}
	}
}

// withoutOwnNameRule is the BGPPeer CRD without its rule that refuses
// IronLB's own Secrets in passwordSecretRef, as CRDs before it were.
func withoutOwnNameRule(crd string) string {
	lines := strings.Split(crd, "\n")
	for i, l := range lines {
		if !strings.Contains(l, "passwordSecretRef.name must not name") || i == 0 || !strings.HasSuffix(lines[i-1], "x-kubernetes-validations:") {
			continue
		}
		for j := i; j < len(lines); j++ {
			if strings.HasSuffix(lines[j], "])'") {
				return strings.Join(slices.Concat(lines[:i-1], lines[j+1:]), "\n")
			}
		}
	}
	return crd
}
