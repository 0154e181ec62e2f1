package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/status"
	"github.com/ironlb/ironlb/status/statustest"
	"github.com/ironlb/ironlb/test/controlplane"
)

// TestStatusCommand runs `kubectl-ironlb status` with a kubeconfig against
// a real API server: JSON output, the metrics flag, and a bad -o.
func TestStatusCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	statustest.Fixture(t, ctx, cp)
	srv := statustest.MetricsServer(t)

	var out, errOut bytes.Buffer
	code := Run([]string{"status", "--kubeconfig", cp.KubeconfigPath, "-o", "json", "--metrics-url", srv.URL}, nil, &out, &errOut)
	if code != ExitOK {
		t.Fatalf("exit status %d: %s", code, errOut.String())
	}
	var st status.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	yes, no := true, false
	wantSpeakers := []status.Speaker{
		{Node: "node-a", Pod: "ironlb-speaker-0", Ready: true, Version: "v0.5.0", Connected: &yes, Healthy: &yes},
		{Node: "node-b", Pod: "ironlb-speaker-1", Version: "v0.4.0", Connected: &no, Healthy: &no},
		{Node: "node-c", Connected: &yes, Healthy: &no},
	}
	if diff := cmp.Diff(wantSpeakers, st.Speakers); diff != "" {
		t.Errorf("speakers (-want +got):\n%s", diff)
	}
	wantVIPs := []status.VIP{
		{Service: "default/api", Address: "198.51.100.7", Pool: "public", BGP: []string{"node-a"}, State: "NoAnnouncingNode"},
		{Service: "default/api", Address: "192.0.2.2", Pool: "lan", SharingKey: "shared", State: "NoAnnouncingNode"},
		{Service: "default/moved", Class: "ironlb.dev/ironlb", Address: "192.0.2.3", Pool: "lan", Layer2: []string{"node-b"}, State: "Announced"},
		{Service: "default/pending", State: "Pending"},
		{Service: "default/web", Address: "192.0.2.1", Pool: "lan", Layer2: []string{"node-a"}, State: "Announced"},
	}
	if diff := cmp.Diff(wantVIPs, st.VIPs); diff != "" {
		t.Errorf("VIPs (-want +got):\n%s", diff)
	}
	if len(st.Pools) != 2 || st.Pools[1].Name != "public" || st.Pools[1].FreeIPv6 != "256" || st.Pools[1].Mode != "bgp" {
		t.Errorf("pools: %+v", st.Pools)
	}
	if len(st.Sessions) != 2 || st.Sessions[0].Node != "node-a" || st.Sessions[0].State != "Established" || st.Sessions[0].BFD != "Up" {
		t.Errorf("sessions: %+v", st.Sessions)
	}
	if st.Metrics == nil || st.Metrics.URL != srv.URL || st.Metrics.Error != "" {
		t.Errorf("metrics: %+v", st.Metrics)
	}

	out.Reset()
	errOut.Reset()
	if code := Run([]string{"status", "--kubeconfig", cp.KubeconfigPath}, nil, &out, &errOut); code != ExitOK {
		t.Fatalf("table: exit status %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "default/web      192.0.2.1                   lan     node-a        -          Announced\n") {
		t.Errorf("table:\n%s", out.String())
	}

	// The class flags reach Gather.
	for _, tc := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"--only-class", []string{"--only-class"}, []string{"default/moved"}},
		{"--load-balancer-class", []string{"--load-balancer-class", "example.com/other"}, []string{"default/api", "default/api", "default/other-class", "default/pending", "default/web"}},
		{"both", []string{"--load-balancer-class=example.com/other", "--only-class"}, []string{"default/other-class"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := Run(append([]string{"status", "--kubeconfig", cp.KubeconfigPath, "-o", "json"}, tc.flags...), nil, &out, &errOut); code != ExitOK {
				t.Fatalf("exit status %d: %s", code, errOut.String())
			}
			var st status.Status
			if err := json.Unmarshal(out.Bytes(), &st); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			var got []string
			for _, v := range st.VIPs {
				got = append(got, v.Service)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("VIPs' Services (-want +got):\n%s", diff)
			}
		})
	}

	errOut.Reset()
	if code := Run([]string{"status", "--kubeconfig", cp.KubeconfigPath, "-o", "yaml"}, nil, &out, &errOut); code != ExitError ||
		errOut.String() != "error: --output must be table or json, not \"yaml\"\n" {
		t.Errorf("-o yaml: exit status %d, stderr %q", code, errOut.String())
	}
}

// TestStatusClassFlag: a --load-balancer-class no Service can have is
// refused before anything is read (the reason after the prefix is the
// API machinery's own validation text).
func TestStatusClassFlag(t *testing.T) {
	for _, tc := range []struct {
		name, class, want string
	}{
		{"empty", "", `error: --load-balancer-class "" is not a class a Service can have: `},
		{"space", "bad class", `error: --load-balancer-class "bad class" is not a class a Service can have: `},
		{"two slashes", "a/b/c", `error: --load-balancer-class "a/b/c" is not a class a Service can have: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			// No kubeconfig is needed: the flag is checked first.
			code := Run([]string{"status", "--kubeconfig", "/nonexistent", "--load-balancer-class", tc.class}, nil, &out, &errOut)
			if code != ExitError || !strings.HasPrefix(errOut.String(), tc.want) {
				t.Errorf("exit status %d, stderr %q, want %d and a stderr starting %q", code, errOut.String(), ExitError, tc.want)
			}
		})
	}
}
