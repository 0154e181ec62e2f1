package clusterapi

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/test/controlplane"
)

// clusterAPIModule is the Cluster API release whose CRDs the example is
// checked against: the main module, which holds the CRDs as its releases
// install them (core/, controlplane/kubeadm/config/crd/bases).
const clusterAPIModule = "sigs.k8s.io/cluster-api@v1.14.2"

// clusterAPICRDs returns the paths of the Cluster and KubeadmControlPlane
// CRDs in the module cache, downloading the module there (never into the
// repository) through the Go module proxy.
func clusterAPICRDs(t *testing.T, ctx context.Context) []string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", clusterAPIModule)
	cmd.Dir = t.TempDir() // outside any module: go.mod and go.sum stay as they are
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); err != nil || jerr != nil || mod.Error != "" {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			out = append(out, ee.Stderr...)
		}
		t.Fatalf("go mod download %s: %v %v\n%s", clusterAPIModule, err, jerr, out)
	}
	return []string{
		filepath.Join(mod.Dir, "core", "config", "crd", "bases", "cluster.x-k8s.io_clusters.yaml"),
		filepath.Join(mod.Dir, "controlplane", "kubeadm", "config", "crd", "bases", "controlplane.cluster.x-k8s.io_kubeadmcontrolplanes.yaml"),
	}
}

// TestExampleServerSideDryRun applies the example with server-side dry-run
// to a real kube-apiserver that has Cluster API's CRDs (schema, CEL rules)
// and the example's namespace: it must be accepted, and the same file with
// one field broken must not. The static pod itself must pass the API
// server's Pod validation too.
func TestExampleServerSideDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane and downloads Cluster API's module")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	crds := clusterAPICRDs(t, ctx)
	cp := controlplane.ForTest(t)
	for _, crd := range crds {
		if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-f", crd); err != nil {
			t.Fatalf("installing %s: %v\n%s", crd, err, out)
		}
	}
	if out, err := cp.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/clusters.cluster.x-k8s.io", "crd/kubeadmcontrolplanes.controlplane.cluster.x-k8s.io"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := cp.Kubectl(ctx, "create", "namespace", Namespace); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	path, err := Path()
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(manifest string) (string, error) {
		return cp.KubectlStdin(ctx, manifest, "apply", "--server-side", "--dry-run=server", "--field-manager=ironlb-example", "-f", "-")
	}

	t.Run("example", func(t *testing.T) {
		out, err := apply(string(example))
		if err != nil {
			t.Fatalf("the API server rejects %s: %v", File, err)
		}
		for _, want := range []string{
			"cluster.cluster.x-k8s.io/" + clusterName + " serverside-applied (server dry run)",
			"kubeadmcontrolplane.controlplane.cluster.x-k8s.io/" + controlPlane + " serverside-applied (server dry run)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl apply did not say %q:\n%s", want, out)
			}
		}
	})

	t.Run("static pod", func(t *testing.T) {
		pod, err := cpvip.StaticPod(ManifestOptions())
		if err != nil {
			t.Fatal(err)
		}
		// What kube-controller-manager makes in every namespace, and the
		// ServiceAccount admission looks up (this control plane runs none).
		if out, err := cp.Kubectl(ctx, "-n", "kube-system", "create", "serviceaccount", "default"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		out, err := cp.KubectlStdin(ctx, string(pod), "create", "--dry-run=server", "-f", "-")
		if err != nil {
			t.Fatalf("the API server rejects the static pod: %v", err)
		}
		if want := "pod/ironlb-control-plane created (server dry run)"; !strings.Contains(out, want) {
			t.Errorf("kubectl create did not say %q:\n%s", want, out)
		}
	})

	for _, tc := range []struct{ name, from, to, wantField string }{
		// An enum the CRD's schema does not allow.
		{"file encoding", "    - content: |\n", "    - encoding: rot13\n      content: |\n",
			"spec.kubeadmConfigSpec.files[0].encoding"},
		// A CEL rule of the CRD: extraArgs names are unique.
		{"extraArgs twice", "        - name: shutdown-delay-duration\n          value: " + shutdownDelay + "\n",
			"        - name: shutdown-delay-duration\n          value: " + shutdownDelay + "\n        - name: shutdown-delay-duration\n          value: 1s\n",
			"spec.kubeadmConfigSpec.clusterConfiguration.apiServer.extraArgs"},
		// A field the v1beta2 schema does not declare, refused by
		// server-side apply.
		{"unknown field", "    port: 6443\n", "    port: 6443\n    portNumber: 6443\n",
			".spec.controlPlaneEndpoint.portNumber"},
	} {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			broken := strings.Replace(string(example), tc.from, tc.to, 1)
			if broken == string(example) {
				t.Fatalf("%q is not in %s", tc.from, File)
			}
			out, err := apply(broken)
			if err == nil {
				t.Fatalf("the API server accepts the example with a broken %s:\n%s", tc.name, out)
			}
			// The API server's answer names the field (its text is the
			// API server's, the field path is the schema's).
			if !strings.Contains(out, tc.wantField) {
				t.Errorf("rejected, but not for %s: %s", tc.wantField, out)
			}
		})
	}
}
