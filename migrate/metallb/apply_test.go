package metallb

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
)

// TestApplyDryRun applies the output for every MetalLB sample, the legacy
// ConfigMap and every mapping case to a real kube-apiserver with IronLB's
// CRDs (schema and CEL rules), with server-side dry-run: every object must
// be accepted.
func TestApplyDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(root, "deploy", "crds")); err != nil {
		t.Fatalf("installing CRDs: %v\n%s", err, out)
	}
	if out, err := cp.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/ippools.ironlb.dev", "crd/bgppeers.ironlb.dev"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := cp.Kubectl(ctx, "create", "namespace", SecretNamespace); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	apply := func(t *testing.T, yaml string) (string, error) {
		return cp.KubectlStdin(ctx, yaml, "apply", "--server-side", "--dry-run=server", "--field-manager=kubectl-ironlb-test", "-f", "-")
	}

	// The rules are enforced: a pool CEL refuses is refused.
	if out, err := apply(t, "apiVersion: ironlb.dev/v1alpha1\nkind: IPPool\nmetadata: {name: bad}\nspec: {addresses: [192.0.2.5/24]}\n"); err == nil || !strings.Contains(out, "host bits set") {
		t.Fatalf("a CIDR with host bits was not refused: %v\n%s", err, out)
	}

	inputs := map[string]string{"legacy-configmap": filepath.Join("testdata", "legacy-configmap.yaml")}
	dir := metallbSamples(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		inputs["sample "+filepath.Base(f)] = f
	}
	applied := 0
	for name, path := range inputs {
		out, res := convertFile(t, path)
		objects := len(res.Pools) + len(res.Peers) + len(res.Secrets)
		if objects == 0 {
			continue
		}
		t.Run(name, func(t *testing.T) {
			got, err := apply(t, out)
			if err != nil {
				t.Fatalf("%v\n%s\ninput:\n%s", err, got, out)
			}
			if n := strings.Count(got, "serverside-applied (server dry run)"); n != objects {
				t.Errorf("%d objects applied, want %d:\n%s", n, objects, got)
			}
		})
		applied++
	}
	// Side-by-side: MetalLB's frozen objects too, against MetalLB's own
	// CRD (from the same module as the samples).
	crd := filepath.Join(filepath.Dir(dir), "config", "crd", "bases", "metallb.io_ipaddresspools.yaml")
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-f", crd); err != nil {
		t.Fatalf("installing MetalLB's IPAddressPool CRD: %v\n%s", err, out)
	}
	if out, err := cp.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/ipaddresspools.metallb.io"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := cp.Kubectl(ctx, "create", "namespace", "metallb-system"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, name := range []string{"side-by-side.yaml", "legacy-configmap.yaml"} {
		t.Run("side-by-side "+name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			in, err := Read(f)
			if err != nil {
				t.Fatal(err)
			}
			res := ConvertSideBySide(in)
			var out bytes.Buffer
			if err := res.WriteYAML(&out); err != nil {
				t.Fatal(err)
			}
			got, err := apply(t, out.String())
			if err != nil {
				t.Fatalf("%v\n%s\ninput:\n%s", err, got, out.String())
			}
			if n, want := strings.Count(got, "serverside-applied (server dry run)"), len(res.MetalLB)+len(res.Pools)+len(res.Peers)+len(res.Secrets); n != want || len(res.MetalLB) == 0 {
				t.Errorf("%d objects applied, want %d (%d of MetalLB):\n%s", n, want, len(res.MetalLB), got)
			}
		})
		applied++
	}
	for _, tc := range mappingCases {
		t.Run("mapping "+tc.name, func(t *testing.T) {
			if got, err := apply(t, tc.want); err != nil {
				t.Fatalf("%v\n%s\ninput:\n%s", err, got, tc.want)
			}
		})
		applied++
	}
	t.Logf("%d conversions applied (server-side dry-run)", applied)
}
