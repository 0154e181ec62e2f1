package pki

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Reasons of a Revocation.
const (
	// RevokedPodGone: the speaker pod the certificate was issued for is
	// gone, finished, or no longer on the certificate's node.
	RevokedPodGone = "PodGone"
	// RevokedNodeGone: the Node the certificate was issued for is gone (or
	// was made again, with another UID).
	RevokedNodeGone = "NodeGone"
	// RevokedNotAttested: the certificate names no pod (issued by an
	// older CCM); the speaker must enroll again.
	RevokedNotAttested = "NotAttested"
	// RevokedUnknown: the CCM has not listed pods and Nodes yet, so it
	// cannot tell; the speaker must enroll (with its token) meanwhile.
	RevokedUnknown = "Unknown"
	// RevokedRenewalRefused: this CCM refused to renew the certificate
	// (the speaker could not prove its node again).
	RevokedRenewalRefused = "RenewalRefused"
)

// distrust makes this CCM treat leaf as not proving its node until it
// expires: its renewal was refused. Entries go when their certificate
// expires; there is at most one per certificate this CA issued.
func (b *Bundle) distrust(leaf *x509.Certificate) {
	if leaf == nil {
		return
	}
	now := b.opts.now()
	b.distrustMu.Lock()
	defer b.distrustMu.Unlock()
	if b.distrusted == nil {
		b.distrusted = map[string]time.Time{}
	}
	for k, notAfter := range b.distrusted {
		if now.After(notAfter) {
			delete(b.distrusted, k)
		}
	}
	b.distrusted[string(leaf.Raw)] = leaf.NotAfter
}

func (b *Bundle) isDistrusted(leaf *x509.Certificate) bool {
	b.distrustMu.Lock()
	defer b.distrustMu.Unlock()
	_, ok := b.distrusted[string(leaf.Raw)]
	return ok
}

// Revocation says why a node certificate no longer proves its node.
type Revocation struct {
	Reason string
	Detail string
}

func (r *Revocation) Error() string {
	return fmt.Sprintf("node certificate revoked (%s): %s", r.Reason, r.Detail)
}

// uidIndex indexes the speaker pods by UID.
const uidIndex = "uid"

// Liveness watches the speaker pods (in the CCM's namespace, of the
// speakers' ServiceAccount) and the Nodes, reduced to what revocation
// needs, and tells sessions when one is gone. A CCM replica starts it
// before it leads (StartLiveness, WithLiveness), so that a new leader's
// first handshakes find it listed.
type Liveness struct {
	pods, nodes cache.SharedIndexInformer

	mu      sync.Mutex
	revoked chan struct{} // closed and replaced when a pod or a Node goes
}

// StartLiveness starts watching the pods of the ServiceAccount speakerSA
// (DefaultSpeakerServiceAccount if empty) in namespace, and the Nodes;
// the watches end with ctx. A standby CCM replica calls it before it
// leads and hands the result to Bootstrap (WithLiveness).
func StartLiveness(ctx context.Context, client kubernetes.Interface, namespace, speakerSA string) *Liveness {
	if speakerSA == "" {
		speakerSA = DefaultSpeakerServiceAccount
	}
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.serviceAccountName", speakerSA).String()
		}))
	nodeFactory := informers.NewSharedInformerFactory(client, 0)
	l := &Liveness{
		pods:    podFactory.Core().V1().Pods().Informer(),
		nodes:   nodeFactory.Core().V1().Nodes().Informer(),
		revoked: make(chan struct{}),
	}
	_ = l.pods.SetTransform(slimPod)
	_ = l.nodes.SetTransform(slimNode)
	_ = l.pods.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			return []string{string(p.UID)}, nil
		}
		return nil, nil
	}})
	_, _ = l.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) {
			if p, ok := obj.(*corev1.Pod); ok && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
				l.notify()
			}
		},
		DeleteFunc: func(any) { l.notify() },
	})
	_, _ = l.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(any) { l.notify() }})
	podFactory.Start(ctx.Done())
	nodeFactory.Start(ctx.Done())
	return l
}

// synced reports whether the pods and the Nodes were listed.
func (l *Liveness) synced() bool { return l.pods.HasSynced() && l.nodes.HasSynced() }

// WaitForSync waits until the pods and the Nodes were listed, or ctx
// ends; it reports whether they were.
func (l *Liveness) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), l.pods.HasSynced, l.nodes.HasSynced)
}

// WaitForLiveness waits until the bundle's watches of the speaker pods
// and Nodes listed them, or ctx ends; it reports whether they did. A new
// leader calls it before it waits for the speakers' first reports: a
// handshake never waits for them (until they are listed a speaker renews
// its certificate on its stream at once instead, AttestationPending).
func (b *Bundle) WaitForLiveness(ctx context.Context) bool {
	if b.live == nil {
		return false
	}
	return b.live.WaitForSync(ctx)
}

func (l *Liveness) notify() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.revoked)
	l.revoked = make(chan struct{})
}

// slimPod keeps what revocation checks of a pod.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp},
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, ServiceAccountName: p.Spec.ServiceAccountName},
		Status:     corev1.PodStatus{Phase: p.Status.Phase},
	}, nil
}

// slimNode keeps what revocation checks of a Node.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}, nil
}

// Revoked returns a channel closed when a speaker pod or a Node is deleted
// (or a speaker pod finished) next: then open streams should Check their
// speaker's identity.
func (b *Bundle) Revoked() <-chan struct{} {
	if b.live == nil {
		return nil
	}
	b.live.mu.Lock()
	defer b.live.mu.Unlock()
	return b.live.revoked
}

// Check reports whether the node certificate node's enrolled peer
// presented still proves its node: the pod and the Node it was issued for
// (its Attestation) must still exist, the pod on that node and not
// finished. It returns a *Revocation otherwise; nil for a peer that is not
// enrolled (it can only enroll) or whose attestation is pending (its
// stream renews), and while the pods and Nodes are not listed yet. After
// a renewal on the stream it checks the newest certificate issued. It reads only the watch caches.
func (b *Bundle) Check(node string, peer *Peer) error {
	if !peer.Enrolled() || peer.AttestationPending() {
		return nil
	}
	err := b.checkLive(node, peer.Current())
	if r, ok := err.(*Revocation); ok && r.Reason == RevokedUnknown {
		// Not listed yet: nothing to revoke by (the stream's handshake
		// or its renewal proved the node); Revoked fires once they are.
		return nil
	}
	if err != nil {
		revoked(node, err)
	}
	return err
}

func (b *Bundle) checkLive(node string, leaf *x509.Certificate) error {
	if b.isDistrusted(leaf) {
		return &Revocation{RevokedRenewalRefused, "its renewal was refused: the speaker did not prove its node again"}
	}
	a, ok := AttestationOf(leaf)
	if !ok {
		return &Revocation{RevokedNotAttested, "the certificate names no speaker pod"}
	}
	l := b.live
	if l == nil {
		return &Revocation{RevokedUnknown, "the CCM does not watch speaker pods"}
	}
	if !l.synced() {
		// Never wait here: this runs inside the TLS handshake.
		return &Revocation{RevokedUnknown, "speaker pods and Nodes not listed yet (may the CCM list pods in its namespace and Nodes?)"}
	}
	objs, err := l.pods.GetIndexer().ByIndex(uidIndex, string(a.PodUID))
	if err != nil || len(objs) == 0 {
		return &Revocation{RevokedPodGone, fmt.Sprintf("speaker pod %s is gone", a.PodUID)}
	}
	p := objs[0].(*corev1.Pod)
	if p.Spec.NodeName != node || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return &Revocation{RevokedPodGone, fmt.Sprintf("speaker pod %s/%s is on node %q, %s", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase)}
	}
	obj, exists, err := l.nodes.GetStore().GetByKey(node)
	if err != nil || !exists || obj.(*corev1.Node).UID != a.NodeUID {
		return &Revocation{RevokedNodeGone, fmt.Sprintf("node %q (UID %s) is gone", node, a.NodeUID)}
	}
	return nil
}

// revoked logs and counts a revocation found for node.
func revoked(node string, err error) {
	r, ok := err.(*Revocation)
	if !ok {
		return
	}
	revocations.WithLabelValues(r.Reason).Inc()
	klog.InfoS("ironlb pki: speaker's node certificate no longer proves its node; it must enroll again", "node", node, "reason", r.Reason, "detail", r.Detail)
}
