package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/test/cluster"
)

// TestReadReport reads a Ginkgo JSON report of a layer-2 run (trimmed
// from a real one: testdata/report-l2.json) into the lines make
// conformance prints: only [Feature:LoadBalancer] specs, the layer-2 skip
// with its reason, failures with their message and place.
func TestReadReport(t *testing.T) {
	results, err := readReport("testdata/report-l2.json", cluster.L2Config)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, r := range results {
		counts[r.state]++
		if !strings.Contains(r.name, "[Feature:LoadBalancer]") {
			t.Errorf("spec %q is not a LoadBalancer spec", r.name)
		}
	}
	if diff := cmp.Diff(map[string]int{"passed": 13, "failed": 3, "skipped": 1}, counts); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
	var skipped, failed []string
	for _, r := range results {
		switch r.state {
		case "skipped":
			skipped = append(skipped, r.line(cluster.L2Config))
		case "failed":
			failed = append(failed, r.line(cluster.L2Config))
		}
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0], "should target all nodes with endpoints [Slow]") ||
		!strings.Contains(skipped[0], ": layer 2: one node answers for a VIP") {
		t.Errorf("skipped: %q", skipped)
	}
	for _, f := range failed {
		if !strings.HasPrefix(f, "failed  [l2] ") || !strings.Contains(f, ".go:") {
			t.Errorf("failure line %q lacks its state or the place it failed", f)
		}
	}
	if _, err := readReport("testdata/missing.json", cluster.L2Config); err == nil {
		t.Error("a missing report: no error")
	}
}

func TestSkipReason(t *testing.T) {
	tests := []struct {
		config, leaf string
		want         bool
	}{
		{cluster.L2Config, "should target all nodes with endpoints [Slow]", true},
		{cluster.L2Config, "should target all nodes with endpoints", true},
		{cluster.L2Config, "should target all nodes with endpoints and more", false},
		{cluster.BGPConfig, "should target all nodes with endpoints [Slow]", false},
	}
	for _, tt := range tests {
		t.Run(tt.config+" "+tt.leaf, func(t *testing.T) {
			if got := skipReason(tt.config, tt.leaf) != ""; got != tt.want {
				t.Errorf("skipped: %v, want %v", got, tt.want)
			}
		})
	}
}
