package status_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ironlb/ironlb/loadbalancer/planner"
	"github.com/ironlb/ironlb/status"
	"github.com/ironlb/ironlb/status/statustest"
	"github.com/ironlb/ironlb/test/controlplane"
)

func TestConditionName(t *testing.T) {
	if status.ConditionAnnounced != planner.ConditionAnnounced {
		t.Fatalf("ConditionAnnounced = %q, the CCM writes %q", status.ConditionAnnounced, planner.ConditionAnnounced)
	}
}

func TestParseAnnounced(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	own := []netip.Addr{a("192.0.2.200"), a("2001:db8::5"), a("198.51.100.7"), a("192.0.2.9")}
	got := status.ParseAnnounced("192.0.2.200=node-a, 2001:db8::5=-, 198.51.100.7=bgp:node-a+node-b, 192.0.2.9=node-c;bgp:node-a+node-c@web, 192.0.2.50=node-evil", own)
	want := map[netip.Addr]status.Announcement{
		a("192.0.2.200"):  {Layer2: []string{"node-a"}},
		a("2001:db8::5"):  {},
		a("198.51.100.7"): {BGP: []string{"node-a", "node-b"}},
		a("192.0.2.9"):    {Layer2: []string{"node-c"}, BGP: []string{"node-a", "node-c"}, SharingKey: "web"},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

const wantTables = `POOLS
NAME    MODE    ADDRESSES                           AUTO   PRIORITY  USED  FREE IPV4  FREE IPV6  READY
lan     layer2  192.0.2.0/28                        true   0         2     14         -          True
public  bgp     198.51.100.0/28,2001:db8:300::/120  false  5         1     15         256        True

VIPS
SERVICE          ADDRESS                     POOL    LAYER 2 NODE  BGP NODES  STATE
default/api      198.51.100.7                public  -             node-a     NoAnnouncingNode
default/api      192.0.2.2 (shared: shared)  lan     -             -          NoAnnouncingNode
default/moved    192.0.2.3                   lan     node-b        -          Announced
default/pending  <pending>                   -       -             -          Pending
default/web      192.0.2.1                   lan     node-a        -          Announced

SPEAKERS
NODE    POD               READY  VERSION  CONNECTED  HEALTHY
node-a  ironlb-speaker-0  true   v0.5.0   %s
node-b  ironlb-speaker-1  false  v0.4.0   %s
%s
BGP SESSIONS
PEER  ADDRESS      NODE    STATE        SINCE  ROUTES  BFD  LAST ERROR
tor   192.0.2.254  node-a  Established  5m     1       Up   -
tor   192.0.2.254  node-b  Active       -      0       -    connection to 192.0.2.254 refused
`

// TestStatusTable: the tables show exactly what the API and the metrics
// say; without metrics, and with an unreachable metrics URL, the rest is
// still shown.
func TestStatusTable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	now := statustest.Fixture(t, ctx, cp)
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	srv := statustest.MetricsServer(t)
	for _, tc := range []struct {
		name, url, want string
	}{
		{"with metrics", srv.URL, fmt.Sprintf(wantTables, "yes        yes", "no         no", "node-c  -                 -      -        yes        no\n")},
		{"without metrics", "", fmt.Sprintf(wantTables, "-          -", "-          -", "") +
			"\nCONNECTED and HEALTHY come from the CCM's metrics: give --metrics-url.\n"},
		{"metrics unreachable", "http://127.0.0.1:1/metrics", fmt.Sprintf(wantTables, "-          -", "-          -", "") +
			"\nThe CCM's metrics at http://127.0.0.1:1/metrics could not be read: Get \"http://127.0.0.1:1/metrics\": dial tcp 127.0.0.1:1: connect: connection refused\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := status.Gather(ctx, kube, dyn, status.Options{Namespace: "ironlb-system", MetricsURL: tc.url})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := st.WriteTable(&out, now); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	// Which Services are listed: IronLB's class (the option, or its
	// default) and class-less ones unless OnlyClass; never another class.
	for _, tc := range []struct {
		name  string
		opts  status.Options
		wants []string
	}{
		{"default class and class-less", status.Options{}, []string{"default/api", "default/api", "default/moved", "default/pending", "default/web"}},
		{"only the default class", status.Options{OnlyClass: true}, []string{"default/moved"}},
		{"another class and class-less", status.Options{LoadBalancerClass: "example.com/other"}, []string{"default/api", "default/api", "default/other-class", "default/pending", "default/web"}},
		{"only another class", status.Options{LoadBalancerClass: "example.com/other", OnlyClass: true}, []string{"default/other-class"}},
		{"only a class no Service has", status.Options{LoadBalancerClass: "example.com/none", OnlyClass: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Namespace = "ironlb-system"
			st, err := status.Gather(ctx, kube, dyn, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range st.VIPs {
				got = append(got, v.Service)
			}
			if diff := cmp.Diff(tc.wants, got); diff != "" {
				t.Errorf("VIPs' Services (-want +got):\n%s", diff)
			}
		})
	}
}
