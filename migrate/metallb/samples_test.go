package metallb

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ironlb/ironlb/test/binaries"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the converter's output")

// MetalLB's configsamples come from the Go module proxy at test time (they
// are not copied into this repository).
const (
	metallbModule  = "go.universe.tf/metallb"
	metallbVersion = "v0.16.2"
)

var (
	metallbOnce sync.Once
	metallbDir  string
	metallbErr  error
)

// metallbSamples returns the configsamples folder of MetalLB's module,
// downloading it with `go mod download` into the module cache.
func metallbSamples(t *testing.T) string {
	t.Helper()
	metallbOnce.Do(func() {
		var dir string
		dir, metallbErr = binaries.ModuleDir(context.Background(), metallbModule+"@"+metallbVersion)
		metallbDir = filepath.Join(dir, "configsamples")
	})
	if metallbErr != nil {
		t.Fatal(metallbErr)
	}
	return metallbDir
}

// sampleReports are, for each of MetalLB's samples, the object and field
// of each report ("note:" for notes). The samples are small on purpose:
// most advertisements name pools or peers that are in other samples.
var sampleReports = map[string][]string{
	"bgpadv_selectspool_by_label.yaml":            {"BGPAdvertisement metallb-system/advertisement spec.ipAddressPoolSelectors[0]"},
	"bgpadv_selectspool_by_list.yaml":             {"BGPAdvertisement metallb-system/advertisement spec.ipAddressPools[0]", "BGPAdvertisement metallb-system/advertisement spec.peers[0]"},
	"bgpadvertisement_communities_localpref.yaml": {"BGPAdvertisement metallb-system/advertisement spec.ipAddressPools[0]"},
	"bgpadvertisement_community_alias.yaml":       {"BGPAdvertisement metallb-system/advertisement spec.ipAddressPools[0]"},
	"bgpadvertisement_with_node_selector.yaml":    {"BGPAdvertisement metallb-system/advertisement spec.ipAddressPools[0]", "BGPAdvertisement metallb-system/advertisement spec.nodeSelectors"},
	"bgppeer_simple.yaml":                         nil,
	"bgppeer_with_bfdprofile.yaml":                nil,
	"bgppeer_with_session_options.yaml":           nil,
	"bgppeer_with_vrf.yaml":                       {"BGPPeer metallb-system/peer spec.vrf"},
	"bgppeer_withsecret.yaml":                     {"note: BGPPeer metallb-system/peer-with-secret spec.keepaliveTime", "note: BGPPeer metallb-system/peer-with-secret spec.passwordSecret"},
	"deployment_bgp.yaml":                         {"note: Deployment nginx ", "note: Service nginx "},
	"deployment_l2.yaml":                          {"note: Deployment nginx ", "note: Service nginx ", "note: L2Advertisement metallb-system/empty spec.interfaces"},
	"ipaddresspool_simple.yaml":                   {"IPAddressPool metallb-system/example "},
	"ipaddresspool_with_selector.yaml":            {"IPAddressPool metallb-system/ippool-ns-service-alloc-sample spec.serviceAllocation.namespaceSelectors", "IPAddressPool metallb-system/ippool-ns-service-alloc-sample "},
	"l2adv_selects_pools_by_list.yaml":            {"L2Advertisement metallb-system/example spec.ipAddressPools[0]"},
	"l2adv_with_node_selector.yaml":               {"L2Advertisement metallb-system/example "},
	"simple_pool_adv_bgp.yaml":                    nil,
	"simple_pool_adv_l2.yaml":                     {"note: L2Advertisement metallb-system/empty spec.interfaces"},
}

// goldenSamples have their whole output in testdata/<sample>.golden.
var goldenSamples = []string{"simple_pool_adv_l2.yaml", "bgppeer_with_bfdprofile.yaml", "ipaddresspool_with_selector.yaml", "bgppeer_withsecret.yaml", "deployment_bgp.yaml"}

// convertFile is the converter's output and reports for a file.
func convertFile(t *testing.T, path string) (string, *Result) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, err := Read(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	res := Convert(in)
	var out bytes.Buffer
	if err := res.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	return out.String(), res
}

// TestSamples converts every file of MetalLB's configsamples: each report
// is the one expected, and the result is partial exactly when a report
// is not a note.
func TestSamples(t *testing.T) {
	dir := metallbSamples(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in %s: %v", dir, err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := filepath.Base(f)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			want, ok := sampleReports[name]
			if !ok {
				t.Fatalf("sample %s has no expectation in sampleReports", name)
			}
			_, res := convertFile(t, f)
			var got []string
			partial := false
			for _, r := range res.Reports {
				k := r.Object + " " + r.Field
				if r.Note {
					k = "note: " + k
				} else {
					partial = true
				}
				got = append(got, k)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("reports (-want +got):\n%s", diff)
			}
			if res.Partial() != partial {
				t.Errorf("Partial() = %v, want %v", res.Partial(), partial)
			}
		})
	}
	for name := range sampleReports {
		if !seen[name] {
			t.Errorf("sample %s is gone from %s", name, dir)
		}
	}
}

// TestGolden compares the whole output (objects, then reports as
// comments) of some samples and of the legacy ConfigMap with
// testdata/*.golden; -update rewrites them.
func TestGolden(t *testing.T) {
	inputs := map[string]string{"legacy-configmap": filepath.Join("testdata", "legacy-configmap.yaml")}
	dir := metallbSamples(t)
	for _, s := range goldenSamples {
		inputs[strings.TrimSuffix(s, ".yaml")] = filepath.Join(dir, s)
	}
	var names []string
	for n := range inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			out, res := convertFile(t, inputs[name])
			got := out + "# stderr:\n"
			for _, r := range res.Reports {
				got += "# " + r.String() + "\n"
			}
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", path, diff)
			}
		})
	}
}
