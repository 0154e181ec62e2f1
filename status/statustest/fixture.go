// Package statustest creates, on a test control plane, the objects a
// running IronLB writes, for the tests of the status command.
package statustest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/status"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
)

// Fixture creates, on a real API server, what a running IronLB writes:
// two pools with status, Services with addresses and the Announced
// condition as the CCM writes it (class-less ones, one of IronLB's class,
// and a pending one of another class), a BGPPeer with sessions, and speaker
// pods. It returns the time the ages are relative to.
func Fixture(t *testing.T, ctx context.Context, cp *controlplane.ControlPlane) time.Time {
	t.Helper()
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(root, "deploy", "crds")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := cp.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/ippools.ironlb.dev", "crd/bgppeers.ironlb.dev"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	ago := func(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }
	ready := func(status metav1.ConditionStatus) []metav1.Condition {
		return []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: status, Reason: v1alpha1.ReasonValid, Message: "ok", LastTransitionTime: ago(time.Hour)}}
	}
	lan := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1alpha1.IPPoolSpec{
		Addresses: []v1alpha1.AddressRange{"192.0.2.0/28"}, Layer2: &v1alpha1.Layer2{}}}
	lan.Status = v1alpha1.IPPoolStatus{Used: 2, IPv4: &v1alpha1.AddressCounts{Total: "16", Used: 2, Free: "14"}, Conditions: ready(metav1.ConditionTrue)}
	public := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "public"}, Spec: v1alpha1.IPPoolSpec{
		Addresses: []v1alpha1.AddressRange{"198.51.100.0/28", "2001:db8:300::/120"}, AutoAssign: ptr.To(false), Priority: 5, BGP: &v1alpha1.BGP{}}}
	public.Status = v1alpha1.IPPoolStatus{Used: 1, IPv4: &v1alpha1.AddressCounts{Total: "16", Used: 1, Free: "15"},
		IPv6: &v1alpha1.AddressCounts{Total: "256", Free: "256"}, Conditions: ready(metav1.ConditionTrue)}
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{PeerAddress: "192.0.2.254", PeerASN: 64512, MyASN: 64513}}
	since := ago(5 * time.Minute)
	peer.Status = v1alpha1.BGPPeerStatus{Summary: "Established 1/2", Sessions: []v1alpha1.BGPSession{
		{Node: "node-b", State: v1alpha1.SessionActive, LastError: "connection to 192.0.2.254 refused"},
		{Node: "node-a", State: v1alpha1.SessionEstablished, Since: &since, AdvertisedRoutes: 1, BFD: &v1alpha1.BFDSession{State: v1alpha1.BFDUp}},
	}}
	for _, o := range []struct {
		res  dynamic.NamespaceableResourceInterface
		obj  runtime.Object
		kind string
	}{{dyn.Resource(v1alpha1.IPPoolResource), lan, "IPPool"}, {dyn.Resource(v1alpha1.IPPoolResource), public, "IPPool"}, {dyn.Resource(v1alpha1.BGPPeerResource), peer, "BGPPeer"}} {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o.obj)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		u.SetAPIVersion(v1alpha1.GroupVersion.String())
		u.SetKind(o.kind)
		created, err := o.res.Create(ctx, u, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating %s %s: %v", o.kind, u.GetName(), err)
		}
		u.SetResourceVersion(created.GetResourceVersion())
		if _, err := o.res.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("status of %s %s: %v", o.kind, u.GetName(), err)
		}
	}

	kube := cp.Client
	svc := func(name string, class *string, ips []string, cond *metav1.Condition) {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: class, Ports: []corev1.ServicePort{{Port: 80}}}}
		s, err := kube.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
		}
		if cond != nil {
			s.Status.Conditions = []metav1.Condition{*cond}
		}
		if _, err := kube.CoreV1().Services("default").UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc("web", nil, []string{"192.0.2.1"}, &metav1.Condition{Type: status.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: "Announced",
		Message: "192.0.2.1=node-a", LastTransitionTime: ago(time.Minute)})
	svc("api", nil, []string{"198.51.100.7", "192.0.2.2"}, &metav1.Condition{Type: status.ConditionAnnounced, Status: metav1.ConditionFalse, Reason: "NoAnnouncingNode",
		Message: "198.51.100.7=bgp:node-a, 192.0.2.2=-@shared", LastTransitionTime: ago(time.Minute)})
	svc("pending", nil, nil, nil)
	// Of IronLB's class: served as class-less ones are.
	svc("moved", ptr.To(status.DefaultLoadBalancerClass), []string{"192.0.2.3"}, &metav1.Condition{Type: status.ConditionAnnounced, Status: metav1.ConditionTrue,
		Reason: "Announced", Message: "192.0.2.3=node-b", LastTransitionTime: ago(time.Minute)})
	if _, err := kube.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "internal"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	other := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "other-class", Namespace: "default"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To("example.com/other"), Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := kube.CoreV1().Services("default").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ironlb-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().ServiceAccounts("ironlb-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, n := range []struct {
		node, version string
		ready         corev1.ConditionStatus
	}{{"node-a", "v0.5.0", corev1.ConditionTrue}, {"node-b", "v0.4.0", corev1.ConditionFalse}} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ironlb-speaker-%d", i), Namespace: "ironlb-system",
			Labels: map[string]string{"app.kubernetes.io/name": "ironlb-speaker"}},
			Spec: corev1.PodSpec{NodeName: n.node, AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "speaker", Image: "ghcr.io/ironlb/ironlb-speaker:" + n.version}}}}
		pod, err := kube.CoreV1().Pods("ironlb-system").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: n.ready}}
		if _, err := kube.CoreV1().Pods("ironlb-system").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return now
}

// MetricsServer serves what the leading CCM's /metrics says of speakers.
func MetricsServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `# HELP ironlb_speaker_connected [ALPHA] 1 while the CCM has a working stream to the node's speaker.
# TYPE ironlb_speaker_connected gauge
ironlb_speaker_connected{node="node-a"} 1
ironlb_speaker_connected{node="node-b"} 0
ironlb_speaker_connected{node="node-c"} 1
# HELP ironlb_speaker_healthy [ALPHA] 1 while the node's speaker reports its default interface usable.
# TYPE ironlb_speaker_healthy gauge
ironlb_speaker_healthy{node="node-a"} 1
ironlb_speaker_healthy{node="node-b"} 0
ironlb_speaker_healthy{node="node-c"} 0
`)
	}))
	t.Cleanup(srv.Close)
	return srv
}
