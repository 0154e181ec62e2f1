package cluster

import (
	"errors"
	"testing"

	"github.com/ironlb/ironlb/cpvip"
)

func TestSettledHolder(t *testing.T) {
	view := func(node string, ready, serving bool, holder string, epoch uint64) SpeakerView {
		return SpeakerView{Node: node, Status: cpvip.Status{Node: node, APIServerReady: ready, Serving: serving, Holder: holder, Epoch: epoch}}
	}
	unreachable := SpeakerView{Node: "node-2", Err: errors.New("connection timed out")}
	tests := []struct {
		name      string
		views     []SpeakerView
		skip      []string
		want      string
		wantEpoch uint64
		wantErr   bool
	}{
		{
			name:  "one holder, all agree",
			views: []SpeakerView{view("node-1", true, false, "node-2", 3), view("node-2", true, true, "node-2", 3), view("node-3", true, false, "node-2", 3)},
			want:  "node-2", wantEpoch: 3,
		},
		{
			name:    "two serve (a healed partition not settled yet)",
			views:   []SpeakerView{view("node-1", true, true, "node-1", 4), view("node-2", true, true, "node-1", 3), view("node-3", true, false, "node-1", 4)},
			wantErr: true,
		},
		{
			name:    "none serves",
			views:   []SpeakerView{view("node-1", true, false, "", 0), view("node-2", true, false, "", 0)},
			wantErr: true,
		},
		{
			name:    "one disagrees on the holder",
			views:   []SpeakerView{view("node-1", true, true, "node-1", 2), view("node-2", true, false, "node-3", 1)},
			wantErr: true,
		},
		{
			name:    "an API server not ready",
			views:   []SpeakerView{view("node-1", true, true, "node-1", 2), view("node-2", false, false, "node-1", 2)},
			wantErr: true,
		},
		{
			name:    "a speaker unreachable",
			views:   []SpeakerView{view("node-1", true, true, "node-1", 2), unreachable},
			wantErr: true,
		},
		{
			name:  "the unreachable one skipped",
			views: []SpeakerView{view("node-1", true, true, "node-1", 2), unreachable, view("node-3", true, false, "node-1", 2)},
			skip:  []string{"node-2"},
			want:  "node-1", wantEpoch: 2,
		},
		{
			name:  "a skipped one still serving (partitioned) does not count",
			views: []SpeakerView{view("node-1", true, true, "node-1", 2), view("node-2", true, true, "node-2", 1), view("node-3", true, false, "node-1", 2)},
			skip:  []string{"node-2"},
			want:  "node-1", wantEpoch: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, epoch, err := settledHolder(tt.views, tt.skip...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("settledHolder: %q, %v; want an error: %v", got, err, tt.wantErr)
			}
			if got != tt.want || epoch != tt.wantEpoch {
				t.Errorf("settledHolder: %q epoch %d, want %q epoch %d", got, epoch, tt.want, tt.wantEpoch)
			}
		})
	}
}
