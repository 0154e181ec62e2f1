package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// MetalLB, as InstallMetalLB runs it beside IronLB: the release of the
// migration guide, built from its Go module (the module proxy is all this
// machine and CI reach; MetalLB publishes images only).
const (
	MetalLBVersion = "v0.16.2"
	metallbModule  = "go.universe.tf/metallb"
)

// MetalLB v0.16.2 needs github.com/metallb/frr-k8s v0.0.27, whose module
// zip the Go module proxy does not serve (403 "not available"; its .info
// and .mod are served). MetalLB uses only frr-k8s' API types
// (api/v1beta1), in the speaker's frr-k8s BGP mode, which the native
// manifest (metallb-native.yaml) does not run. The build replaces
// frr-k8s with a folder made from v0.0.26, the newest whose zip is
// served: its go.mod and api/v1beta1 with what MetalLB uses of v0.0.27's
// API added (the AsPathPrependPrefixes type and Advertise's
// PrefixesWithAsPathPrepend field). MetalLB's own code is built as
// released.
const (
	frrK8sModule  = "github.com/metallb/frr-k8s"
	frrK8sVersion = "v0.0.26"
)

// frrK8sAdditions is the file the build adds to frr-k8s v0.0.26's
// api/v1beta1: v0.0.27's AS-path-prepend advertisement.
const frrK8sAdditions = `package v1beta1

// AsPathPrependPrefixes are prefixes advertised with the local AS
// prepended AsPathPrepend times (frr-k8s v0.0.27, for MetalLB v0.16.2).
type AsPathPrependPrefixes struct {
	Prefixes      []string ` + "`json:\"prefixes,omitempty\"`" + `
	AsPathPrepend uint8    ` + "`json:\"asPathPrepend,omitempty\"`" + `
}

// DeepCopyInto copies the receiver into out.
func (in *AsPathPrependPrefixes) DeepCopyInto(out *AsPathPrependPrefixes) {
	*out = *in
	if in.Prefixes != nil {
		out.Prefixes = append([]string(nil), in.Prefixes...)
	}
}

// DeepCopy returns a copy of the receiver.
func (in *AsPathPrependPrefixes) DeepCopy() *AsPathPrependPrefixes {
	if in == nil {
		return nil
	}
	out := new(AsPathPrependPrefixes)
	in.DeepCopyInto(out)
	return out
}
`

// frrK8sEdits are the edits of frr-k8s v0.0.26's api/v1beta1 files:
// file (in api/v1beta1) → old text, which must occur once → new text.
var frrK8sEdits = []struct{ file, old, new string }{
	{
		file: "frrconfiguration_types.go",
		old:  "PrefixesWithCommunity []CommunityPrefixes `json:\"withCommunity,omitempty\"`\n}",
		new:  "PrefixesWithCommunity []CommunityPrefixes `json:\"withCommunity,omitempty\"`\n\n\tPrefixesWithAsPathPrepend []AsPathPrependPrefixes `json:\"withAsPathPrepend,omitempty\"`\n}",
	},
	{
		file: "zz_generated.deepcopy.go",
		old:  "func (in *Advertise) DeepCopyInto(out *Advertise) {\n\t*out = *in\n",
		new:  "func (in *Advertise) DeepCopyInto(out *Advertise) {\n\t*out = *in\n\tif in.PrefixesWithAsPathPrepend != nil {\n\t\tout.PrefixesWithAsPathPrepend = make([]AsPathPrependPrefixes, len(in.PrefixesWithAsPathPrepend))\n\t\tfor i := range in.PrefixesWithAsPathPrepend {\n\t\t\tin.PrefixesWithAsPathPrepend[i].DeepCopyInto(&out.PrefixesWithAsPathPrepend[i])\n\t\t}\n\t}\n",
	},
}

// MetalLBModuleDir downloads MetalLB's module (go mod download, through
// the module proxy) and returns its folder in the module cache: its
// sources and config/manifests.
func MetalLBModuleDir(ctx context.Context) (string, error) {
	return moduleDir(ctx, metallbModule+"@"+MetalLBVersion)
}

// moduleDir runs go mod download -json for module@version and returns
// its folder.
func moduleDir(ctx context.Context, modVersion string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", modVersion)
	cmd.Dir = os.TempDir() // outside any module or workspace
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", modVersion, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w: %s", modVersion, err, strings.TrimSpace(stderr.String()))
	}
	if info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no folder in %q", modVersion, out)
	}
	return info.Dir, nil
}

// BuildMetalLB builds MetalLB's controller and speaker, static
// linux/amd64 binaries, into cacheDir/<version>/bin and returns that
// folder; binaries already there are reused. The build uses MetalLB's
// own go.mod and go.sum (copied into cacheDir, with frr-k8s replaced as
// frrK8sVersion says) and the module proxy only.
func BuildMetalLB(ctx context.Context, cacheDir string) (string, error) {
	dir := filepath.Join(cacheDir, MetalLBVersion)
	bin := filepath.Join(dir, "bin")
	if exists(filepath.Join(bin, "controller")) && exists(filepath.Join(bin, "speaker")) {
		return bin, nil
	}
	src, err := MetalLBModuleDir(ctx)
	if err != nil {
		return "", err
	}
	frr, err := moduleDir(ctx, frrK8sModule+"@"+frrK8sVersion)
	if err != nil {
		return "", err
	}
	work := filepath.Join(dir, "build")
	if err := os.RemoveAll(work); err != nil {
		return "", err
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	frrDir := filepath.Join(work, "frr-k8s")
	if err := writeFRRK8s(frr, frrDir); err != nil {
		return "", err
	}
	modfile, err := writeMetalLBModfile(src, work, frrDir)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, ".bin-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, prog := range []string{"controller", "speaker"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-modfile="+modfile, "-trimpath",
			"-ldflags=-s -w -X go.universe.tf/metallb/internal/version.gitCommit="+MetalLBVersion+" -X go.universe.tf/metallb/internal/version.gitBranch="+MetalLBVersion,
			"-o", filepath.Join(tmp, prog), "./"+prog)
		cmd.Dir = src
		// Local toolchain: MetalLB's go.mod asks for go 1.26.0, as
		// IronLB's does; its toolchain line would download another Go.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod -buildvcs=false", "GOTOOLCHAIN=local",
			"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building MetalLB %s's %s: %w\n%s", MetalLBVersion, prog, err, b)
		}
	}
	if err := os.RemoveAll(bin); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// writeMetalLBModfile copies MetalLB's go.mod and go.sum into work (the
// module cache is read-only; the build may add go.sum lines for the
// replacement's requirements) with frr-k8s replaced by the folder frr,
// and returns the go.mod's path.
func writeMetalLBModfile(src, work, frr string) (string, error) {
	mod, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		return "", err
	}
	sum, err := os.ReadFile(filepath.Join(src, "go.sum"))
	if err != nil {
		return "", err
	}
	mod = append(mod, fmt.Sprintf("\nreplace %s => %s\n", frrK8sModule, frr)...)
	modfile := filepath.Join(work, "go.mod")
	if err := os.WriteFile(modfile, mod, 0o644); err != nil {
		return "", err
	}
	return modfile, os.WriteFile(filepath.Join(work, "go.sum"), sum, 0o644)
}

// writeFRRK8s makes the frr-k8s replacement in out from the v0.0.26
// module folder src: its go.mod and api/v1beta1 (without tests), edited
// as frrK8sEdits say, and frrK8sAdditions.
func writeFRRK8s(src, out string) error {
	api := filepath.Join("api", "v1beta1")
	if err := os.MkdirAll(filepath.Join(out, api), 0o755); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(src, api, "*.go"))
	if err != nil {
		return err
	}
	files = append(files, filepath.Join(src, "go.mod"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, f)
		if err != nil {
			return err
		}
		for _, e := range frrK8sEdits {
			if filepath.Join(api, e.file) != rel {
				continue
			}
			if n := strings.Count(string(b), e.old); n != 1 {
				return fmt.Errorf("frr-k8s %s %s: the text to extend occurs %d times, want once", frrK8sVersion, rel, n)
			}
			b = []byte(strings.Replace(string(b), e.old, e.new, 1))
		}
		if err := os.WriteFile(filepath.Join(out, rel), b, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(out, api, "zz_metallb_aspathprepend.go"), []byte(frrK8sAdditions), 0o644)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
