package version

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestAppVersionIsChart: AppVersion is the chart's appVersion and the tag
// deploy/kustomization.yaml pins the speaker's image to.
func TestAppVersionIsChart(t *testing.T) {
	root := filepath.Join("..", "..")
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	readYAML(t, filepath.Join(root, "deploy", "chart", "ironlb", "Chart.yaml"), &chart)
	if chart.AppVersion != AppVersion {
		t.Errorf("Chart.yaml appVersion %q, AppVersion %q", chart.AppVersion, AppVersion)
	}
	var kust struct {
		Images []struct {
			Name   string `json:"name"`
			NewTag string `json:"newTag"`
		} `json:"images"`
	}
	readYAML(t, filepath.Join(root, "deploy", "kustomization.yaml"), &kust)
	found := false
	for _, img := range kust.Images {
		if img.Name == "ghcr.io/ironlb/ironlb-speaker" {
			found = true
			if img.NewTag != AppVersion {
				t.Errorf("deploy/kustomization.yaml tags %s %q, AppVersion %q", img.Name, img.NewTag, AppVersion)
			}
		}
	}
	if !found {
		t.Error("deploy/kustomization.yaml does not tag ghcr.io/ironlb/ironlb-speaker")
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
}

func TestImageTag(t *testing.T) {
	for _, tc := range []struct{ version, want string }{
		{"v0.2.0", "v0.2.0"},
		{"v1.10.3-rc.2", "v1.10.3-rc.2"},
		{"v0.0.0-dev", AppVersion},
		{"v0.1.0-12-g0123abc", AppVersion},
		{"v0.1.0-dirty", AppVersion},
		{"8fa1899", AppVersion},
		{"", AppVersion},
	} {
		t.Run(tc.version, func(t *testing.T) {
			defer func(v string) { Version = v }(Version)
			Version = tc.version
			if got := ImageTag(); got != tc.want {
				t.Errorf("ImageTag() with Version %q = %q, want %q", tc.version, got, tc.want)
			}
		})
	}
}
