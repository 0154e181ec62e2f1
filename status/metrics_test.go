package status

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMergeMetricsVersions: the version a speaker reported to the CCM
// (ironlb_speaker_info) replaces its pod's image tag; a node the CCM knows
// without a pod is listed with its reported version.
func TestMergeMetricsVersions(t *testing.T) {
	st := &Status{Speakers: []Speaker{{Node: "node-a", Pod: "ironlb-speaker-0", Version: "v0.5.0"}, {Node: "node-b", Pod: "ironlb-speaker-1", Version: "v0.4.0"}}}
	st.mergeMetrics(&speakerMetrics{
		connected: map[string]bool{"node-a": true, "node-b": true, "node-c": true},
		healthy:   map[string]bool{"node-a": true},
		versions:  map[string]string{"node-a": "v0.5.1-rc.1", "node-c": "v0.5.0"},
	})
	got := map[string]string{}
	for _, s := range st.Speakers {
		got[s.Node] = s.Version
	}
	want := map[string]string{"node-a": "v0.5.1-rc.1", "node-b": "v0.4.0", "node-c": "v0.5.0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
}
