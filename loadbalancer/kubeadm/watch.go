package kubeadm

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Watcher follows kube-system/kubeadm-config, and only it: its informer
// lists and watches by name (a metadata.name field selector, which RBAC
// checks against resourceNames), so a change of the endpoint is picked
// up at once.
type Watcher struct {
	informer cache.SharedIndexInformer
	handler  cache.ResourceEventHandlerRegistration
	onChange func(netip.Addr)
	log      klog.Logger

	mu     sync.Mutex
	vip    netip.Addr
	logged string // the last problem logged, so each is logged once
}

// NewWatcher returns a Watcher that calls onChange with the VIP to
// reserve (the zero Addr for none) whenever it changes. A
// ClusterConfiguration that stops parsing keeps the last VIP reserved:
// IronLB never hands out a VIP it is unsure about. Run starts it.
func NewWatcher(client kubernetes.Interface, onChange func(netip.Addr)) (*Watcher, error) {
	lw := cache.NewFilteredListWatchFromClient(client.CoreV1().RESTClient(), "configmaps", Namespace, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", Name).String()
	})
	w := &Watcher{
		informer: cache.NewSharedIndexInformer(lw, &v1.ConfigMap{}, 0, cache.Indexers{}),
		onChange: onChange,
		log:      klog.Background().WithName("kubeadm-config"),
	}
	var err error
	w.handler, err = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.update,
		UpdateFunc: func(_, cur any) { w.update(cur) },
		DeleteFunc: func(any) { w.set(netip.Addr{}) },
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) { w.informer.RunWithContext(ctx) }

// HasSynced reports whether the ConfigMap (or its absence) was read.
func (w *Watcher) HasSynced() bool { return w.handler.HasSynced() }

func (w *Watcher) update(obj any) {
	cm, ok := obj.(*v1.ConfigMap)
	if !ok || cm.Name != Name {
		return
	}
	ep, err := EndpointOf(cm)
	switch {
	case errors.Is(err, ErrInvalid):
		w.once(err.Error(), func() {
			w.log.Error(err, "Cannot read the control-plane endpoint from kube-system/kubeadm-config; the VIP reserved before (if any) stays reserved; list the control-plane VIP in the cloud config (controlPlane.vips)")
		})
		return
	case ep.Host != "":
		w.once("host "+ep.Host, func() {
			w.log.Info("The control-plane endpoint in kube-system/kubeadm-config is a DNS name, which IronLB does not resolve: it cannot reserve the control-plane VIP by itself; list it in the cloud config (controlPlane.vips) so that no Service is given it", "host", ep.Host)
		})
	}
	w.set(ep.VIP)
}

// once runs log when msg differs from the last problem logged.
func (w *Watcher) once(msg string, log func()) {
	w.mu.Lock()
	same := w.logged == msg
	w.logged = msg
	w.mu.Unlock()
	if !same {
		log()
	}
}

func (w *Watcher) set(vip netip.Addr) {
	w.mu.Lock()
	same := w.vip == vip
	w.vip = vip
	if vip.IsValid() {
		w.logged = ""
	}
	w.mu.Unlock()
	if !same {
		if vip.IsValid() {
			w.log.Info("Reserving the control-plane VIP of kube-system/kubeadm-config", "vip", vip)
		}
		w.onChange(vip)
	}
}
