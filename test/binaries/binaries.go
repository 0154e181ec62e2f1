// Package binaries locates the executables the tests run: the control-plane
// binaries built by `make controlplane` into .cache/bin, and IronLB's own
// binaries, built from the working tree once per test process.
package binaries

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

// Module is the root module path of IronLB.
const Module = "github.com/ironlb/ironlb"

// RepoRoot returns the repository root: the closest parent folder of the
// working directory whose go.mod declares Module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module "+Module+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", Module)
		}
		dir = parent
	}
}

// ControlPlane holds the paths of the control-plane binaries.
type ControlPlane struct {
	Etcd          string
	KubeAPIServer string
	Kubectl       string
}

// FindControlPlane returns the control-plane binaries from $IRONLB_TOOLS_BIN
// or <repo>/.cache/bin, with an error saying how to build them when missing.
func FindControlPlane() (ControlPlane, error) {
	dir := os.Getenv("IRONLB_TOOLS_BIN")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return ControlPlane{}, err
		}
		dir = filepath.Join(root, ".cache", "bin")
	}
	cp := ControlPlane{
		Etcd:          filepath.Join(dir, "etcd"),
		KubeAPIServer: filepath.Join(dir, "kube-apiserver"),
		Kubectl:       filepath.Join(dir, "kubectl"),
	}
	for _, p := range []string{cp.Etcd, cp.KubeAPIServer, cp.Kubectl} {
		if _, err := os.Stat(p); err != nil {
			return ControlPlane{}, fmt.Errorf("control-plane binary %s missing (run `make controlplane` first): %w", p, err)
		}
	}
	return cp, nil
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// IronLB builds ironlb-ccm, ironlb-speaker and kubectl-ironlb from the working tree (once per
// process; Go's build cache makes repeats cheap) and returns the folder that
// holds them. $IRONLB_BIN, when set, names a folder of prebuilt binaries.
func IronLB() (string, error) {
	buildOnce.Do(func() {
		if dir := os.Getenv("IRONLB_BIN"); dir != "" {
			buildDir = dir
			return
		}
		root, err := RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		buildDir = filepath.Join(root, ".cache", "test-bin")
		if err := os.MkdirAll(buildDir, 0o755); err != nil {
			buildErr = err
			return
		}
		// Test packages run in parallel processes: serialize their builds.
		lock, err := os.OpenFile(filepath.Join(buildDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			buildErr = err
			return
		}
		defer lock.Close()
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			buildErr = fmt.Errorf("locking %s: %w", lock.Name(), err)
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+"/", "./cmd/ironlb-ccm", "./cmd/ironlb-speaker", "./cmd/kubectl-ironlb")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building IronLB binaries: %w\n%s", err, out)
		}
	})
	return buildDir, buildErr
}
