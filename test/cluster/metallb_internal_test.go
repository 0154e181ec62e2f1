package cluster

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCheckMetalLBManifest: only MetalLB's two images, as built here,
// and no imagePullPolicy Always.
func TestCheckMetalLBManifest(t *testing.T) {
	const controller = "        image: quay.io/metallb/controller:" + MetalLBVersion + "\n"
	const speaker = "        image: quay.io/metallb/speaker:" + MetalLBVersion + "\n"
	for _, tc := range []struct {
		name, manifest string
		ok             bool
	}{
		{"as released", controller + speaker, true},
		{"pulled always", controller + "        imagePullPolicy: Always\n" + speaker, false},
		{"another version", controller + "        image: quay.io/metallb/speaker:v0.15.0\n", false},
		{"another image", controller + speaker + "        image: quay.io/frrouting/frr:9.1.0\n", false},
		{"no speaker", controller, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "metallb-native.yaml")
			if err := os.WriteFile(path, []byte(tc.manifest), 0o644); err != nil {
				t.Fatal(err)
			}
			err := checkMetalLBManifest(path)
			if (err == nil) != tc.ok {
				t.Errorf("checkMetalLBManifest: %v, want ok: %v", err, tc.ok)
			}
		})
	}
}
