package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/test/binaries"
)

// releaseVersion is the form of the project's version: a release tag
// (v1.2.3, v1.2.3-rc.1), never a moving one such as latest.
var releaseVersion = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)

// projectVersion returns the project's version: the chart's appVersion,
// which the chart's images default to and deploy/kustomization.yaml's
// images must pin.
func projectVersion(t *testing.T) string {
	t.Helper()
	path := filepath.Join(chartDir(t), "Chart.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(data, &chart); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	if !releaseVersion.MatchString(chart.AppVersion) {
		t.Fatalf("%s: appVersion %q is not a release version (%s)", path, chart.AppVersion, releaseVersion)
	}
	return chart.AppVersion
}

// TestImagesPinnedToVersion: every image the install manifests name, as
// kubectl kustomize deploy/ and helm template (default values) render
// them, is tagged with the project's version (the chart's appVersion): not
// untagged, not latest, not another release. deploy/'s own files name the
// images without a tag (deploy/kustomization.yaml's images pins them) or
// with that version.
func TestImagesPinnedToVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("renders deploy/ and the chart with kubectl and helm (make controlplane tools)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	version := projectVersion(t)

	bins, err := binaries.FindControlPlane()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bins.Kubectl, "kustomize", filepath.Join(repoRoot(t), "deploy")).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize deploy/: %v\n%s", err, out)
	}
	rendered := []struct{ name, manifest string }{
		{"kubectl kustomize deploy/", string(out)},
		{"helm template (default values)", helmTemplate(t, ctx, "ironlb-system", "")},
	}
	for _, r := range rendered {
		t.Run(r.name, func(t *testing.T) {
			images := podImages(parseObjects(t, r.manifest))
			want := []string{"ghcr.io/ironlb/ironlb-ccm", "ghcr.io/ironlb/ironlb-speaker"}
			if diff := cmp.Diff(want, imageNames(images)); diff != "" {
				t.Errorf("images (-want +got):\n%s", diff)
			}
			for _, img := range images {
				if err := checkImageTag(img.ref, version, false); err != nil {
					t.Errorf("%s: %v", img.where, err)
				}
			}
		})
	}

	t.Run("deploy/ files", func(t *testing.T) {
		deploy := filepath.Join(repoRoot(t), "deploy")
		var images []podImage
		err := filepath.WalkDir(deploy, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && path == filepath.Join(deploy, "chart") {
				return filepath.SkipDir // templates, rendered above
			}
			if d.IsDir() || filepath.Ext(path) != ".yaml" {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(deploy, path)
			for _, img := range podImages(parseObjects(t, string(data))) {
				img.where = "deploy/" + rel + ": " + img.where
				images = append(images, img)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(images) == 0 {
			t.Fatal("no images in deploy/")
		}
		for _, img := range images {
			if err := checkImageTag(img.ref, version, true); err != nil {
				t.Errorf("%s: %v", img.where, err)
			}
		}
	})
}

// TestManifestsVersioned: make manifests VERSION=v9.9.9 writes
// ironlb.yaml, which is kubectl kustomize deploy/ with both images tagged
// v9.9.9 and nothing else changed, and the chart packaged with appVersion
// v9.9.9, whose rendering (default values) names only v9.9.9 images.
func TestManifestsVersioned(t *testing.T) {
	if testing.Short() {
		t.Skip("runs make manifests (kubectl and helm: make controlplane tools)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const version = "v9.9.9"
	bins, err := binaries.FindControlPlane()
	if err != nil {
		t.Fatal(err)
	}
	helm := helmBinary(t)
	root := repoRoot(t)
	dir := filepath.Join(t.TempDir(), "manifests")
	// -o: use the tools as they are; make test has just brought them up
	// to date, and a test must not start a six-minute rebuild.
	cmd := exec.CommandContext(ctx, "make", "-C", root, "-o", bins.Kubectl, "-o", helm,
		"manifests", "VERSION="+version, "MANIFESTS_DIR="+dir, "KUBECTL="+bins.Kubectl, "HELM="+helm)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { // not make test's jobserver
		return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
	})
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make manifests: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	chartName := "ironlb-" + chartVersion(t) + ".tgz"
	if want := []string{chartName, "ironlb.yaml"}; !slices.Equal(files, want) {
		t.Fatalf("make manifests wrote %v, want %v", files, want)
	}

	t.Run("ironlb.yaml", func(t *testing.T) {
		got, err := os.ReadFile(filepath.Join(dir, "ironlb.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range podImages(parseObjects(t, string(got))) {
			if err := checkImageTag(img.ref, version, false); err != nil {
				t.Errorf("%s: %v", img.where, err)
			}
		}
		deploy, err := exec.CommandContext(ctx, bins.Kubectl, "kustomize", filepath.Join(root, "deploy")).Output()
		if err != nil {
			t.Fatalf("kubectl kustomize deploy/: %v", err)
		}
		pinned := projectVersion(t)
		want := string(deploy)
		for _, name := range []string{"ghcr.io/ironlb/ironlb-ccm", "ghcr.io/ironlb/ironlb-speaker"} {
			if !strings.Contains(want, name+":"+pinned) {
				t.Fatalf("kubectl kustomize deploy/ names no %s:%s", name, pinned)
			}
			want = strings.ReplaceAll(want, name+":"+pinned, name+":"+version)
		}
		if diff := cmp.Diff(want, string(got)); diff != "" {
			t.Errorf("ironlb.yaml is not deploy/ with the images tagged %s (-want +got):\n%s", version, diff)
		}
	})

	t.Run("chart", func(t *testing.T) {
		chart := filepath.Join(dir, chartName)
		meta, err := runHelm(t, ctx, "show", "chart", chart)
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			AppVersion string `json:"appVersion"`
		}
		if err := yaml.Unmarshal([]byte(meta), &c); err != nil || c.AppVersion != version {
			t.Errorf("packaged chart: appVersion %q (%v), want %s", c.AppVersion, err, version)
		}
		out, err := runHelm(t, ctx, "template", "ironlb", chart, "--namespace", "ironlb-system")
		if err != nil {
			t.Fatal(err)
		}
		images := podImages(parseObjects(t, out))
		if diff := cmp.Diff([]string{"ghcr.io/ironlb/ironlb-ccm", "ghcr.io/ironlb/ironlb-speaker"}, imageNames(images)); diff != "" {
			t.Errorf("images (-want +got):\n%s", diff)
		}
		for _, img := range images {
			if err := checkImageTag(img.ref, version, false); err != nil {
				t.Errorf("%s: %v", img.where, err)
			}
		}
	})
}

// chartVersion returns the chart's own version (Chart.yaml's version).
func chartVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir(t), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		Version string `json:"version"`
	}
	if err := yaml.Unmarshal(data, &chart); err != nil || chart.Version == "" {
		t.Fatalf("Chart.yaml: version %q (%v)", chart.Version, err)
	}
	return chart.Version
}

// TestCheckImageTag: what checkImageTag accepts as pinned to v0.1.0.
func TestCheckImageTag(t *testing.T) {
	tests := []struct {
		ref             string
		untaggedAllowed bool
		wantErr         string // "": accepted
	}{
		{"ghcr.io/ironlb/ironlb-ccm:v0.1.0", false, ""},
		{"ghcr.io/ironlb/ironlb-ccm:v0.1.0@sha256:0123abcd", false, ""},
		{"localhost:5000/ironlb-ccm:v0.1.0", false, ""},
		{"ghcr.io/ironlb/ironlb-ccm", false, "no tag"},
		{"ghcr.io/ironlb/ironlb-ccm", true, ""},
		{"localhost:5000/ironlb-ccm", false, "no tag"},
		{"ghcr.io/ironlb/ironlb-ccm@sha256:0123abcd", false, "no tag"},
		{"ghcr.io/ironlb/ironlb-ccm:latest", false, "latest"},
		{"ghcr.io/ironlb/ironlb-ccm:latest", true, "latest"},
		{"ghcr.io/ironlb/ironlb-ccm:v0.0.9", false, "not the project's version v0.1.0"},
		{"ghcr.io/ironlb/ironlb-ccm:v0.0.9", true, "not the project's version v0.1.0"},
		{"ghcr.io/ironlb/ironlb-ccm:", false, "no tag"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s untagged allowed %v", tc.ref, tc.untaggedAllowed), func(t *testing.T) {
			err := checkImageTag(tc.ref, "v0.1.0", tc.untaggedAllowed)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("checkImageTag(%q) = %v, want nil", tc.ref, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("checkImageTag(%q) = %v, want an error containing %q", tc.ref, err, tc.wantErr)
			}
		})
	}
}

// checkImageTag says what is wrong with image reference ref, which must
// be tagged version (or, with untaggedAllowed, have no tag).
func checkImageTag(ref, version string, untaggedAllowed bool) error {
	_, tag := splitImage(ref)
	switch {
	case tag == "" && untaggedAllowed:
		return nil
	case tag == "":
		return fmt.Errorf("image %s has no tag: it runs whatever latest is; want tag %s", ref, version)
	case tag == "latest":
		return fmt.Errorf("image %s is tagged latest; want %s", ref, version)
	case tag != version:
		return fmt.Errorf("image %s is tagged %s, not the project's version %s (Chart.yaml's appVersion)", ref, tag, version)
	}
	return nil
}

// splitImage splits an image reference into its name and tag ("" when it
// has none); a digest is dropped.
func splitImage(ref string) (name, tag string) {
	ref, _, _ = strings.Cut(ref, "@")
	slash := strings.LastIndex(ref, "/")
	if colon := strings.LastIndex(ref, ":"); colon > slash {
		return ref[:colon], ref[colon+1:]
	}
	return ref, ""
}

// podImage is an image a pod template (or pod) names.
type podImage struct {
	ref   string
	where string // object and container
}

// podImages returns the images of every container, init container and
// ephemeral container of objs, wherever they sit in the object.
func podImages(objs []*unstructured.Unstructured) []podImage {
	var out []podImage
	var walk func(o *unstructured.Unstructured, v any)
	walk = func(o *unstructured.Unstructured, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if list, ok := c.([]any); ok && (k == "containers" || k == "initContainers" || k == "ephemeralContainers") {
					for _, ct := range list {
						ct, _ := ct.(map[string]any)
						img, _ := ct["image"].(string)
						out = append(out, podImage{ref: img, where: fmt.Sprintf("%s container %v", objectKey(o), ct["name"])})
					}
					continue
				}
				walk(o, c)
			}
		case []any:
			for _, c := range v {
				walk(o, c)
			}
		}
	}
	for _, o := range objs {
		walk(o, o.Object)
	}
	return out
}

// imageNames returns the names of images, sorted, without repeats.
func imageNames(images []podImage) []string {
	var names []string
	for _, img := range images {
		name, _ := splitImage(img.ref)
		names = append(names, name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}
