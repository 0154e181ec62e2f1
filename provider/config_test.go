package provider

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Config
		wantErr string
	}{
		{name: "empty", input: "", want: Config{}},
		{
			name:  "all fields",
			input: "instances:\n  defaultInstanceType: bare-metal\n  defaultZone: rack-a\n  defaultRegion: dc1\n",
			want:  Config{Instances: InstancesConfig{DefaultInstanceType: "bare-metal", DefaultZone: "rack-a", DefaultRegion: "dc1"}},
		},
		{name: "unknown top-level field", input: "instance: {}\n", wantErr: `unknown field "instance"`},
		{name: "unknown nested field", input: "instances:\n  zone: a\n", wantErr: `unknown field "instances.zone"`},
		{name: "duplicate key", input: "instances:\n  defaultZone: a\n  defaultZone: b\n", wantErr: "already set"},
		{name: "wrong type", input: "instances: 3\n", wantErr: "parsing cloud config"},
		{
			name:    "invalid label values reported together",
			input:   "instances:\n  defaultZone: \"rack a\"\n  defaultRegion: \"-dc\"\n",
			wantErr: `instances.defaultRegion "-dc"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig(strings.NewReader(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseConfig (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConfigNil(t *testing.T) {
	got, err := ParseConfig(nil)
	if err != nil || got != (Config{}) {
		t.Fatalf("ParseConfig(nil) = %+v, %v; want defaults", got, err)
	}
}

func TestInvalidValuesListedTogether(t *testing.T) {
	_, err := ParseConfig(strings.NewReader("instances:\n  defaultZone: \"rack a\"\n  defaultRegion: \"-dc\"\n"))
	if err == nil || !strings.Contains(err.Error(), "defaultZone") || !strings.Contains(err.Error(), "defaultRegion") {
		t.Fatalf("error = %v, want both fields named", err)
	}
}
