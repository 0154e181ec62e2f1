package provider

import (
	"net/netip"
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
		{
			name:  "heartbeat rate",
			input: "speakers:\n  heartbeatRate: 500\n",
			want:  Config{Speakers: SpeakersConfig{HeartbeatRate: 500}},
		},
		{name: "negative heartbeat rate", input: "speakers:\n  heartbeatRate: -1\n", wantErr: "speakers.heartbeatRate -1: must be between 1 and 1000000"},
		{name: "bad heartbeat", input: "speakers:\n  heartbeatInterval: 1ms\n", wantErr: "speakers.heartbeatInterval 1ms: must be between 10ms and 1m"},
		{name: "bad duration", input: "speakers:\n  heartbeatInterval: soon\n", wantErr: "parsing cloud config"},
		{name: "bad port", input: "speakers:\n  port: 70000\n", wantErr: "speakers.port 70000"},
		{name: "bad namespace", input: "speakers:\n  secretNamespace: Kube_System\n", wantErr: "speakers.secretNamespace"},
		{name: "unknown top-level field", input: "instance: {}\n", wantErr: `unknown field "instance"`},
		{name: "unknown nested field", input: "instances:\n  zone: a\n", wantErr: `unknown field "instances.zone"`},
		{name: "duplicate key", input: "instances:\n  defaultZone: a\n  defaultZone: b\n", wantErr: "already set"},
		{name: "wrong type", input: "instances: 3\n", wantErr: "parsing cloud config"},
		{
			name:  "control-plane VIPs",
			input: "controlPlane:\n  vips: [192.0.2.250, \"2001:db8::250\"]\n",
			want:  Config{ControlPlane: ControlPlaneConfig{VIPs: []string{"192.0.2.250", "2001:db8::250"}}},
		},
		{name: "control-plane VIP not an address", input: "controlPlane:\n  vips: [cp.example.com]\n", wantErr: `controlPlane.vips "cp.example.com": not an IP address`},
		{name: "control-plane VIP with a prefix", input: "controlPlane:\n  vips: [192.0.2.250/32]\n", wantErr: `controlPlane.vips "192.0.2.250/32": not an IP address`},
		{name: "control-plane VIP with a port", input: "controlPlane:\n  vips: [\"192.0.2.250:6443\"]\n", wantErr: "not an IP address"},
		{name: "control-plane VIP with a zone", input: "controlPlane:\n  vips: [\"fe80::1%eth0\"]\n", wantErr: "with a zone"},
		{name: "control-plane VIP IPv4-mapped", input: "controlPlane:\n  vips: [\"::ffff:192.0.2.250\"]\n", wantErr: "IPv4-mapped"},
		{name: "control-plane VIP loopback", input: "controlPlane:\n  vips: [127.0.0.1]\n", wantErr: "not a unicast address"},
		{name: "control-plane VIP unspecified", input: "controlPlane:\n  vips: [\"::\"]\n", wantErr: "not a unicast address"},
		{name: "control-plane VIP twice", input: "controlPlane:\n  vips: [192.0.2.250, 192.0.2.250]\n", wantErr: "listed twice"},
		{name: "control-plane VIPs too many", input: "controlPlane:\n  vips: [192.0.2.1, 192.0.2.2, 192.0.2.3, 192.0.2.4, 192.0.2.5]\n", wantErr: "5 addresses, at most 4"},
		{name: "control-plane unknown field", input: "controlPlane:\n  vip: 192.0.2.250\n", wantErr: `unknown field "controlPlane.vip"`},
		{
			name:  "loadBalancerClass",
			input: "loadBalancerClass:\n  name: example.net/lb\n  only: true\n",
			want:  Config{LoadBalancerClass: LoadBalancerClassConfig{Name: "example.net/lb", Only: true}},
		},
		{name: "loadBalancerClass not a qualified name", input: "loadBalancerClass:\n  name: a/b/c\n", wantErr: `loadBalancerClass.name "a/b/c"`},
		{name: "loadBalancerClass only not a bool", input: "loadBalancerClass:\n  only: sometimes\n", wantErr: "parsing cloud config"},
		{name: "loadBalancerClass unknown field", input: "loadBalancerClass:\n  class: x\n", wantErr: `unknown field "loadBalancerClass.class"`},
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
	if err != nil || !cmp.Equal(got, Config{}) {
		t.Fatalf("ParseConfig(nil) = %+v, %v; want defaults", got, err)
	}
}

func TestInvalidValuesListedTogether(t *testing.T) {
	_, err := ParseConfig(strings.NewReader("instances:\n  defaultZone: \"rack a\"\n  defaultRegion: \"-dc\"\n"))
	if err == nil || !strings.Contains(err.Error(), "defaultZone") || !strings.Contains(err.Error(), "defaultRegion") {
		t.Fatalf("error = %v, want both fields named", err)
	}
}

func TestControlPlaneAddresses(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader("controlPlane:\n  vips: [192.0.2.250, \"2001:DB8::250\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.ControlPlane.Addresses()
	want := []netip.Addr{netip.MustParseAddr("192.0.2.250"), netip.MustParseAddr("2001:db8::250")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("Addresses (-want +got):\n%s", diff)
	}
}
