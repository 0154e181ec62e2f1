package rig

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	cloudproviderapi "k8s.io/cloud-provider/api"
)

// RegisterNode creates a Node the way a kubelet started with
// --cloud-provider=external and --node-ip=<providedIP> does: tainted
// uninitialized, annotated with the provided IP, labelled with its hostname,
// and with a Ready status that lists only the hostname as address.
// providedIP may be empty (no --node-ip) or a dual-stack pair "a,b".
func RegisterNode(ctx context.Context, client kubernetes.Interface, name, providedIP string, labels map[string]string) (*corev1.Node, error) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				corev1.LabelHostname:   name,
				corev1.LabelOSStable:   "linux",
				corev1.LabelArchStable: "amd64",
			},
			Annotations: map[string]string{},
		},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{{
				Key:    cloudproviderapi.TaintExternalCloudProvider,
				Value:  "true",
				Effect: corev1.TaintEffectNoSchedule,
			}},
		},
	}
	for k, v := range labels {
		node.Labels[k] = v
	}
	if providedIP != "" {
		node.Annotations[cloudproviderapi.AnnotationAlphaProvidedIPAddr] = providedIP
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating node %s: %w", name, err)
	}
	// The API server adds the node.kubernetes.io/not-ready taint to new
	// Nodes; kube-controller-manager removes it once the kubelet reports
	// Ready. The rig runs no kube-controller-manager, so it does that here.
	// The CCM may update the Node meanwhile: retry on conflicts.
	var updated *corev1.Node
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewTime(time.Now())
		hostname := corev1.NodeAddress{Type: corev1.NodeHostName, Address: name}
		if !slices.Contains(cur.Status.Addresses, hostname) {
			cur.Status.Addresses = append(cur.Status.Addresses, hostname)
		}
		cur.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		cur.Status.NodeInfo = corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64"}
		if cur, err = client.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
		cur.Spec.Taints = slices.DeleteFunc(cur.Spec.Taints, func(t corev1.Taint) bool {
			return t.Key == corev1.TaintNodeNotReady
		})
		updated, err = client.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("marking node %s ready: %w", name, err)
	}
	return updated, nil
}

// Initialized reports whether node has lost the uninitialized taint.
func Initialized(node *corev1.Node) bool {
	for _, t := range node.Spec.Taints {
		if t.Key == cloudproviderapi.TaintExternalCloudProvider {
			return false
		}
	}
	return true
}
