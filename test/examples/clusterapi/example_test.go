package clusterapi

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/cpvip"
)

var update = flag.Bool("update", false, "rewrite "+File+" from Example")

// TestExampleUpToDate: the file in the repository is Example's output
// (-update writes it), and its static pod is cpvip.StaticPod's, byte for
// byte, at the static pod path.
func TestExampleUpToDate(t *testing.T) {
	want, err := Example()
	if err != nil {
		t.Fatal(err)
	}
	path, err := Path()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s is stale; run go generate ./test/examples/clusterapi (-want +got):\n%s", File, diff)
	}

	pod, err := cpvip.StaticPod(ManifestOptions())
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(got, []byte("\n---\n"))
	var kcp struct {
		Kind string `json:"kind"`
		Spec struct {
			KubeadmConfigSpec struct {
				Files []struct {
					Path    string `json:"path"`
					Content string `json:"content"`
				} `json:"files"`
			} `json:"kubeadmConfigSpec"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(docs[len(docs)-1], &kcp); err != nil {
		t.Fatal(err)
	}
	files := kcp.Spec.KubeadmConfigSpec.Files
	if kcp.Kind != "KubeadmControlPlane" || len(files) != 1 || files[0].Path != cpvip.ManifestPath {
		t.Fatalf("the last document is not a KubeadmControlPlane writing only %s: %+v", cpvip.ManifestPath, kcp)
	}
	if diff := cmp.Diff(string(pod), files[0].Content); diff != "" {
		t.Errorf("the static pod in %s is not StaticPod's (-want +got):\n%s", File, diff)
	}
	if !strings.Contains(files[0].Content, "--vip="+vip) {
		t.Errorf("the static pod does not serve %s", vip)
	}
}
