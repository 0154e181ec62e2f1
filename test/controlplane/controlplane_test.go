package controlplane

import (
	"context"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestParallelStartsAndRBAC starts two control planes at once, checks that
// each serves, that RBAC denies an unbound service account, and that Stop
// leaves nothing behind.
func TestParallelStartsAndRBAC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cp, err := Start(ctx, Options{})
			if err != nil {
				t.Fatal(err)
			}
			dir := cp.Dir
			defer func() {
				if err := cp.Stop(); err != nil {
					t.Errorf("Stop: %v", err)
				}
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("control plane folder %s left behind (stat: %v)", dir, err)
				}
				if !cp.APIServer().Exited() {
					t.Errorf("kube-apiserver still running after Stop")
				}
			}()

			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rbac-check"}}
			if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody", Namespace: "rbac-check"}}
			if _, err := cp.Client.CoreV1().ServiceAccounts("rbac-check").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, "rbac-check", "nobody")
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				t.Fatal(err)
			}
			client := kubernetes.NewForConfigOrDie(cfg)
			_, err = client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if !apierrors.IsForbidden(err) {
				t.Fatalf("listing nodes as an unbound service account: got %v, want Forbidden", err)
			}
			out, err := cp.Kubectl(ctx, "get", "namespace", "rbac-check", "-o", "name")
			if err != nil || out != "namespace/rbac-check\n" {
				t.Fatalf("kubectl get namespace: %q, %v", out, err)
			}
		})
	}
}
