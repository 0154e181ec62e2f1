package instances

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
)

func node(name string, annotations, labels map[string]string, addrs ...v1.NodeAddress) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations, Labels: labels},
		Status:     v1.NodeStatus{Addresses: addrs},
	}
}

func internal(ip string) v1.NodeAddress { return v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip} }
func external(ip string) v1.NodeAddress { return v1.NodeAddress{Type: v1.NodeExternalIP, Address: ip} }
func host(n string) v1.NodeAddress      { return v1.NodeAddress{Type: v1.NodeHostName, Address: n} }

const providedIP = "alpha.kubernetes.io/provided-node-ip"

func TestInstanceMetadata(t *testing.T) {
	defaults := Defaults{InstanceType: "bare-metal", Zone: "zone-d", Region: "region-d"}
	tests := []struct {
		name string
		node *v1.Node
		want *cloudprovider.InstanceMetadata
	}{
		{
			name: "IPv4 provided IP, hostname from status",
			node: node("n1", map[string]string{providedIP: "192.0.2.1"}, nil, host("n1.example")),
			want: &cloudprovider.InstanceMetadata{
				ProviderID:    "ironlb://n1",
				NodeAddresses: []v1.NodeAddress{internal("192.0.2.1"), host("n1.example")},
				InstanceType:  "bare-metal", Zone: "zone-d", Region: "region-d",
			},
		},
		{
			name: "IPv6 provided IP, hostname from label",
			node: node("n2", map[string]string{providedIP: "2001:db8::2"}, map[string]string{v1.LabelHostname: "host2"}),
			want: &cloudprovider.InstanceMetadata{
				ProviderID:    "ironlb://n2",
				NodeAddresses: []v1.NodeAddress{internal("2001:db8::2"), host("host2")},
				InstanceType:  "bare-metal", Zone: "zone-d", Region: "region-d",
			},
		},
		{
			name: "dual-stack provided IPs keep their order",
			node: node("n3", map[string]string{providedIP: "2001:db8::3,192.0.2.3"}, nil),
			want: &cloudprovider.InstanceMetadata{
				ProviderID:    "ironlb://n3",
				NodeAddresses: []v1.NodeAddress{internal("2001:db8::3"), internal("192.0.2.3"), host("n3")},
				InstanceType:  "bare-metal", Zone: "zone-d", Region: "region-d",
			},
		},
		{
			name: "provided IP replaces status InternalIPs, ExternalIPs kept",
			node: node("n4", map[string]string{providedIP: "192.0.2.4"}, nil, internal("198.51.100.4"), external("203.0.113.4")),
			want: &cloudprovider.InstanceMetadata{
				ProviderID:    "ironlb://n4",
				NodeAddresses: []v1.NodeAddress{internal("192.0.2.4"), external("203.0.113.4"), host("n4")},
				InstanceType:  "bare-metal", Zone: "zone-d", Region: "region-d",
			},
		},
		{
			name: "no annotation: status addresses kept",
			node: node("n5", nil, nil, internal("198.51.100.5"), host("n5")),
			want: &cloudprovider.InstanceMetadata{
				ProviderID:    "ironlb://n5",
				NodeAddresses: []v1.NodeAddress{internal("198.51.100.5"), host("n5")},
				InstanceType:  "bare-metal", Zone: "zone-d", Region: "region-d",
			},
		},
		{
			name: "labels win over defaults",
			node: node("n6", map[string]string{providedIP: "192.0.2.6"}, map[string]string{
				v1.LabelInstanceTypeStable: "r650", v1.LabelTopologyZone: "rack-6", v1.LabelTopologyRegion: "dc-6",
			}),
			want: &cloudprovider.InstanceMetadata{
				ProviderID:    "ironlb://n6",
				NodeAddresses: []v1.NodeAddress{internal("192.0.2.6"), host("n6")},
				InstanceType:  "r650", Zone: "rack-6", Region: "dc-6",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New(nil, defaults).InstanceMetadata(context.Background(), tc.node)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("InstanceMetadata (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInstanceMetadataKeepsProviderID(t *testing.T) {
	n := node("n", map[string]string{providedIP: "192.0.2.1"}, nil)
	n.Spec.ProviderID = "metal://rack/7"
	got, err := New(nil, Defaults{}).InstanceMetadata(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if got.ProviderID != "metal://rack/7" {
		t.Errorf("ProviderID = %q, want the kubelet's metal://rack/7", got.ProviderID)
	}
}

func TestInstanceMetadataRejectsBadIPs(t *testing.T) {
	for _, tc := range []struct {
		value, wantErr string
	}{
		{"192.0.2.300", `could not parse "192.0.2.300"`},
		{"node1", `could not parse "node1"`},
		{"", `could not parse ""`},
		{"192.0.2.1,192.0.2.2", "dual-stack pair"},
		{"192.0.2.1,2001:db8::1,192.0.2.3", "dual-stack pair"},
		{"0.0.0.0", "unspecified"},
		{"127.0.0.1", "loopback"},
		{"ff02::1", "multicast"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			recorder := record.NewFakeRecorder(10)
			n := node("bad", map[string]string{providedIP: tc.value}, nil)
			_, err := New(recorder, Defaults{}).InstanceMetadata(context.Background(), n)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			select {
			case ev := <-recorder.Events:
				if !strings.HasPrefix(ev, "Warning InvalidNodeIP ") || !strings.Contains(ev, tc.wantErr) {
					t.Errorf("event = %q, want a Warning InvalidNodeIP naming the problem", ev)
				}
			default:
				t.Errorf("no Event recorded")
			}
		})
	}
}

func TestInstanceExists(t *testing.T) {
	for _, tc := range []struct {
		annotations map[string]string
		want        bool
	}{
		{nil, true},
		{map[string]string{AnnotationGone: "false"}, true},
		{map[string]string{AnnotationGone: "yes"}, true},
		{map[string]string{AnnotationGone: "true"}, false},
	} {
		got, err := New(nil, Defaults{}).InstanceExists(context.Background(), node("n", tc.annotations, nil))
		if err != nil || got != tc.want {
			t.Errorf("InstanceExists(annotations %v) = %v, %v; want %v", tc.annotations, got, err, tc.want)
		}
	}
}
