package provider

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		{
			name:  "speakers",
			input: "speakers:\n  port: 8000\n  heartbeatInterval: 100ms\n  heartbeatMisses: 3\n  secretNamespace: ironlb\n",
			want:  Config{Speakers: SpeakersConfig{Port: 8000, HeartbeatInterval: metav1.Duration{Duration: 100 * time.Millisecond}, HeartbeatMisses: 3, SecretNamespace: "ironlb"}},
		},
		{
			name:  "local rebalance delay",
			input: "speakers:\n  localRebalanceDelay: 2m\n",
			want:  Config{Speakers: SpeakersConfig{LocalRebalanceDelay: metav1.Duration{Duration: 2 * time.Minute}}},
		},
		{
			name:  "local rebalance never",
			input: "speakers:\n  localRebalanceDelay: -1s\n",
			want:  Config{Speakers: SpeakersConfig{LocalRebalanceDelay: metav1.Duration{Duration: -time.Second}}},
		},
		{name: "local rebalance too soon", input: "speakers:\n  localRebalanceDelay: 100ms\n", wantErr: "speakers.localRebalanceDelay 100ms: must be between 1s and 1h"},
		{
			name:  "restart grace",
			input: "speakers:\n  restartGrace: 45s\n",
			want:  Config{Speakers: SpeakersConfig{RestartGrace: metav1.Duration{Duration: 45 * time.Second}}},
		},
		{name: "restart grace too short", input: "speakers:\n  restartGrace: 100ms\n", wantErr: "speakers.restartGrace 100ms: must be between 1s and 10m"},
		{name: "restart grace too long", input: "speakers:\n  restartGrace: 1h\n", wantErr: "speakers.restartGrace 1h0m0s: must be between 1s and 10m"},
		{name: "bad heartbeat", input: "speakers:\n  heartbeatInterval: 1ms\n", wantErr: "speakers.heartbeatInterval 1ms: must be between 10ms and 1m"},
		{name: "bad duration", input: "speakers:\n  heartbeatInterval: soon\n", wantErr: "parsing cloud config"},
		{name: "bad port", input: "speakers:\n  port: 70000\n", wantErr: "speakers.port 70000"},
		{name: "bad namespace", input: "speakers:\n  secretNamespace: Kube_System\n", wantErr: "speakers.secretNamespace"},
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
