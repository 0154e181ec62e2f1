// Package slowclient wraps a Kubernetes client so that its lists of pods
// hang until a channel is closed: a big cluster, or a slow API server, as
// a new leader sees it. (A fake Clientset's reactors run under its lock
// and would block every other call too.)
package slowclient

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Pods returns cs whose pod lists wait until release is closed.
func Pods(cs kubernetes.Interface, release <-chan struct{}) kubernetes.Interface {
	return slowPods{Interface: cs, release: release}
}

type slowPods struct {
	kubernetes.Interface
	release <-chan struct{}
}

// IsWatchListSemanticsUnSupported is the fake Clientset's: the informers
// list, then watch.
func (s slowPods) IsWatchListSemanticsUnSupported() bool { return true }

func (s slowPods) CoreV1() corev1client.CoreV1Interface {
	return slowCore{CoreV1Interface: s.Interface.CoreV1(), release: s.release}
}

type slowCore struct {
	corev1client.CoreV1Interface
	release <-chan struct{}
}

func (c slowCore) Pods(namespace string) corev1client.PodInterface {
	return slowPodList{PodInterface: c.CoreV1Interface.Pods(namespace), release: c.release}
}

type slowPodList struct {
	corev1client.PodInterface
	release <-chan struct{}
}

func (p slowPodList) List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	select {
	case <-p.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.PodInterface.List(ctx, opts)
}
