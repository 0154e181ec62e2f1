package v1alpha1

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ironlb/ironlb/test/binaries"
)

// TestGeneratedFilesUpToDate regenerates the CRD and the deepcopy code with
// the pinned controller-gen and fails if the checked-in files differ: run
// `make generate` after changing the API.
func TestGeneratedFilesUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs controller-gen")
	}
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	gen := filepath.Join(root, ".cache", "bin", "controller-gen")
	if _, err := os.Stat(gen); err != nil {
		t.Fatalf("controller-gen missing (run `make tools`): %v", err)
	}
	out := t.TempDir()
	cmd := exec.Command(gen, "object:headerFile=", "paths=./api/...", "crd", "output:crd:dir="+filepath.Join(out, "crds"), "output:object:dir="+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, b)
	}
	for _, f := range []struct{ generated, checkedIn string }{
		{filepath.Join(out, "crds", "ironlb.dev_ippools.yaml"), filepath.Join(root, "deploy", "crds", "ironlb.dev_ippools.yaml")},
		{filepath.Join(out, "zz_generated.deepcopy.go"), filepath.Join(root, "api", "v1alpha1", "zz_generated.deepcopy.go")},
	} {
		want, err := os.ReadFile(f.generated)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.checkedIn)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want, got) {
			t.Errorf("%s is stale: run `make generate` and commit the result", f.checkedIn)
		}
	}
}
