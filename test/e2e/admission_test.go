package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
)

// withCRDs starts an API server with deploy/crds applied and waits until
// crd (such as "ippools.ironlb.dev") is served.
func withCRDs(t *testing.T, ctx context.Context, crd string) *controlplane.ControlPlane {
	t.Helper()
	cp := controlplane.ForTest(t)
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(root, "deploy", "crds")); err != nil {
		t.Fatalf("applying CRDs: %v\n%s", err, out)
	}
	if _, err := cp.Kubectl(ctx, "wait", "--for=condition=Established", "crd/"+crd, "--timeout=30s"); err != nil {
		t.Fatal(err)
	}
	return cp
}

// admissionCase is one object spec to apply, and what its rejection must
// say (every string; none means it is accepted).
type admissionCase struct {
	name, spec string
	wantErr    []string
}

// checkAdmission applies an object of kind (ironlb.dev/v1alpha1) for each
// case, named <prefix><index>, and checks the API server's verdict.
func checkAdmission(t *testing.T, ctx context.Context, cp *controlplane.ControlPlane, kind, prefix string, cases []admissionCase) {
	t.Helper()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := fmt.Sprintf("apiVersion: ironlb.dev/v1alpha1\nkind: %s\nmetadata:\n  name: %s%d\nspec:\n%s", kind, prefix, i, tc.spec)
			out, err := cp.KubectlStdin(ctx, doc, "apply", "-f", "-")
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("valid %s rejected: %v\n%s", kind, err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("malformed %s accepted:\n%s", kind, out)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(out, want) {
					t.Errorf("rejection does not say %q:\n%s", want, out)
				}
			}
		})
	}
}
