package pki

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/test/controlplane"
)

// TestWatchSecretsByName runs the CA Secrets' watch on a real API server
// as a service account that may get and watch ironlb-ca and
// ironlb-ca-previous by name and nothing else: the watch needs no right
// to list or watch the namespace's other Secrets (those exist for BGP
// passwords only), and a new previous CA still reaches Run at once.
func TestWatchSecretsByName(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	admin := cp.Client
	mustCreate := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("creating %s: %v", what, err)
		}
	}
	_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{})
	mustCreate("namespace", err)
	_, err = admin.CoreV1().ServiceAccounts(testNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "ccm"}}, metav1.CreateOptions{})
	mustCreate("service account", err)
	_, err = admin.RbacV1().Roles(testNS).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "ca-secrets"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"},
			ResourceNames: []string{CASecretName, PreviousCASecretName}, Verbs: []string{"get", "watch"}}},
	}, metav1.CreateOptions{})
	mustCreate("role", err)
	_, err = admin.RbacV1().RoleBindings(testNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ca-secrets"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "ca-secrets"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "ccm", Namespace: testNS}},
	}, metav1.CreateOptions{})
	mustCreate("role binding", err)
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, testNS, "ccm")
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
	// The account cannot watch the namespace's Secrets as a whole.
	if w, err := client.CoreV1().Secrets(testNS).Watch(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		if w != nil {
			w.Stop()
		}
		t.Fatalf("watching every Secret: %v, want forbidden", err)
	}

	b := &Bundle{client: client, namespace: testNS}
	poke := make(chan struct{}, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go b.watchSecrets(wctx, poke)
	prev := caSecretNamed(PreviousCASecretName, mustCA(t, t0))
	for i := 0; ; i++ {
		// Create, or replace: an event before the watch started is missed.
		_ = admin.CoreV1().Secrets(testNS).Delete(ctx, PreviousCASecretName, metav1.DeleteOptions{})
		if _, err := admin.CoreV1().Secrets(testNS).Create(ctx, prev.DeepCopy(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		select {
		case <-poke:
			return
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatal("no poke for a new previous CA")
		}
		if i == 9 {
			t.Fatal("no poke for a new previous CA in 10 tries")
		}
	}
}
