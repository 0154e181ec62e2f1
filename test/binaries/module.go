package binaries

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
)

// ModuleDir downloads module (path@version) from the Go module proxy into
// the module cache, if it is not there yet, and returns its folder: how
// tests read another project's files (MetalLB's config samples, the
// Prometheus Operator's CRDs) without copying them into this repository.
func ModuleDir(ctx context.Context, module string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module)
	cmd.Dir = os.TempDir() // outside this module: nothing is added to go.mod
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var m struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &m); err != nil || jerr != nil || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %v %s %s", module, err, m.Error, bytes.TrimSpace(stderr.Bytes()))
	}
	return m.Dir, nil
}
