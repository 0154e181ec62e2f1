package cluster

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// docs splits a multi-document YAML into its documents, by kind.
func docs(t *testing.T, s string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, d := range strings.Split(s, "\n---\n") {
		var m map[string]any
		if err := yaml.UnmarshalStrict([]byte(d), &m); err != nil {
			t.Fatalf("%v in:\n%s", err, d)
		}
		out[m["kind"].(string)] = m
	}
	return out
}

func TestKubeadmConfigs(t *testing.T) {
	const token, hash = "abcdef.0123456789abcdef", "sha256:00"
	key := strings.Repeat("ab", 32)
	tests := []struct {
		name   string
		config string
		// want are fields (dotted paths) of the documents, by kind.
		want map[string]map[string]any
		// absent are fields that must not be there.
		absent map[string][]string
	}{
		{
			name:   "init, one control-plane node",
			config: initConfig(token, NodeIP(1), ""),
			want: map[string]map[string]any{
				"InitConfiguration":    {"localAPIEndpoint.advertiseAddress": "192.0.2.11"},
				"ClusterConfiguration": {"controlPlaneEndpoint": "192.0.2.11:6443"},
			},
			absent: map[string][]string{"InitConfiguration": {"certificateKey"}},
		},
		{
			name:   "init behind the VIP",
			config: initConfig(token, ControlPlaneVIP, key),
			want: map[string]map[string]any{
				"InitConfiguration":    {"localAPIEndpoint.advertiseAddress": "192.0.2.11", "certificateKey": key},
				"ClusterConfiguration": {"controlPlaneEndpoint": "192.0.2.250:6443"},
			},
		},
		{
			name:   "control-plane join through the VIP",
			config: joinConfig(2, ControlPlaneVIP, token, hash, key),
			want: map[string]map[string]any{
				"JoinConfiguration": {
					"discovery.bootstrapToken.apiServerEndpoint":     "192.0.2.250:6443",
					"controlPlane.localAPIEndpoint.advertiseAddress": "192.0.2.12",
					"controlPlane.certificateKey":                    key,
					"nodeRegistration.name":                          "node-2",
				},
			},
		},
		{
			name:   "worker join",
			config: joinConfig(4, NodeIP(1), token, hash, ""),
			want: map[string]map[string]any{
				"JoinConfiguration": {"discovery.bootstrapToken.apiServerEndpoint": "192.0.2.11:6443", "nodeRegistration.name": "node-4"},
			},
			absent: map[string][]string{"JoinConfiguration": {"controlPlane"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := docs(t, tt.config)
			for kind, fields := range tt.want {
				for path, want := range fields {
					v, ok := field(got[kind], path)
					if !ok {
						t.Errorf("%s: no %s", kind, path)
						continue
					}
					if diff := cmp.Diff(want, v); diff != "" {
						t.Errorf("%s %s (-want +got):\n%s", kind, path, diff)
					}
				}
			}
			for kind, paths := range tt.absent {
				for _, path := range paths {
					if v, ok := field(got[kind], path); ok {
						t.Errorf("%s: %s is %v, want none", kind, path, v)
					}
				}
			}
		})
	}
}

func field(m map[string]any, path string) (any, bool) {
	var v any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = mm[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

func TestNewCertificateKey(t *testing.T) {
	a, err := newCertificateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := newCertificateKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 64 || strings.Trim(a, "0123456789abcdef") != "" || a == b {
		t.Errorf("certificate keys %q, %q: want two different 64 hex digits", a, b)
	}
}
