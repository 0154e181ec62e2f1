// Package capicrds finds Cluster API's own CRDs, for tests that run IronLB
// against a real API server with Cluster API installed: the YAML that
// Cluster API v1.14.2 ships (core/config/crd/bases of the module
// sigs.k8s.io/cluster-api), downloaded into the Go module cache through
// the module proxy, never copied into this repository. IronLB does not
// install them: Cluster API installs its own.
package capicrds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Module is the Cluster API release whose CRDs tests use; its API types
// are those of sigs.k8s.io/cluster-api/api at the same version (go.mod).
const Module = "sigs.k8s.io/cluster-api@v1.14.2"

// The CRDs' files, under the module's core/config/crd/bases.
const (
	Claims    = "ipam.cluster.x-k8s.io_ipaddressclaims.yaml"
	Addresses = "ipam.cluster.x-k8s.io_ipaddresses.yaml"
	Clusters  = "cluster.x-k8s.io_clusters.yaml"
)

// Paths returns the paths of the named CRD files (Claims, Addresses,
// Clusters) in the module cache, downloading the module if needed.
func Paths(ctx context.Context, files ...string) ([]string, error) {
	dir, err := os.MkdirTemp("", "capicrds-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", Module)
	cmd.Dir = dir // outside any module: go.mod and go.sum stay as they are
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	jerr := json.Unmarshal(out, &mod)
	if err != nil || jerr != nil || mod.Error != "" {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			out = append(out, ee.Stderr...)
		}
		return nil, fmt.Errorf("go mod download %s: %v %v %s\n%s", Module, err, jerr, mod.Error, out)
	}
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = filepath.Join(mod.Dir, "core", "config", "crd", "bases", f)
	}
	return paths, nil
}
