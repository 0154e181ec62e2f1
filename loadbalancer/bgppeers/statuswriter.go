package bgppeers

import (
	"context"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// The status writer: each BGPPeer's status (Status) from the speakers'
// session reports and the sync's problems, written when it changed, with
// Events for what changed.

// statusDelay batches status writes: sessions of many nodes coming up at
// once become one write per peer.
const statusDelay = 500 * time.Millisecond

// touchAll refreshes the status of every peer soon.
func (c *Controller) touchAll() {
	for _, k := range c.informer.GetStore().ListKeys() {
		c.queue.AddAfter(statusPrefix+k, statusDelay)
	}
}

func (c *Controller) writeStatus(ctx context.Context, name string) error {
	obj, exists, err := c.informer.GetStore().GetByKey(name)
	if err != nil || !exists {
		return err
	}
	p, err := fromUnstructured(obj)
	if err != nil {
		return err
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	var selected []string
	sessions := NodeSessions{}
	for _, n := range nodes {
		sel, _ := Selected(n, []*v1alpha1.BGPPeer{p})
		if len(sel) == 0 {
			continue
		}
		selected = append(selected, n.Name)
		if st, ok := c.sp.View(n.Name); ok {
			for _, s := range st.BGPSessions {
				if s.GetPeer() == p.Spec.PeerAddress {
					sessions[n.Name] = s
				}
			}
		}
	}
	c.mu.Lock()
	problems := slices.Clone(c.problems)
	c.mu.Unlock()
	status := Status(p, selected, sessions, problems, time.Now())
	if statusEqual(status, p.Status) {
		return nil
	}
	old := p.Status
	p.Status = status
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		return err
	}
	_, err = c.client.UpdateStatus(ctx, &unstructured.Unstructured{Object: u}, metav1.UpdateOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		c.queue.AddAfter(statusPrefix+name, statusDelay)
		return nil
	case err != nil:
		return err
	}
	// Events only for what was written: a retried write sends none twice.
	c.announce(obj.(*unstructured.Unstructured), old, status)
	return nil
}

// Event reasons on BGPPeers.
const (
	ReasonSessionFailed      = "SessionFailed"
	ReasonSessionEstablished = "SessionEstablished"
	ReasonNotUsable          = "PeerNotUsable"
)

// announce sends Events for what changed between two statuses: a peer
// that became unusable, and each node's session that failed or came up.
func (c *Controller) announce(obj *unstructured.Unstructured, old, cur v1alpha1.BGPPeerStatus) {
	if c.recorder == nil {
		return
	}
	if oc, nc := meta.FindStatusCondition(old.Conditions, "Ready"), meta.FindStatusCondition(cur.Conditions, "Ready"); nc != nil && nc.Status == metav1.ConditionFalse &&
		(oc == nil || oc.Status != nc.Status || oc.Message != nc.Message) {
		c.recorder.Event(obj, v1.EventTypeWarning, ReasonNotUsable, nc.Message)
	}
	before := map[string]v1alpha1.BGPSession{}
	for _, s := range old.Sessions {
		before[s.Node] = s
	}
	for _, s := range cur.Sessions {
		b, had := before[s.Node]
		switch {
		case s.LastError != "" && (!had || b.LastError != s.LastError):
			c.recorder.Eventf(obj, v1.EventTypeWarning, ReasonSessionFailed, "node %s: %s", s.Node, s.LastError)
		case s.State == v1alpha1.SessionEstablished && had && b.State != v1alpha1.SessionEstablished:
			c.recorder.Eventf(obj, v1.EventTypeNormal, ReasonSessionEstablished, "node %s: session established", s.Node)
		}
	}
}

// statusEqual compares statuses ignoring condition transition times.
func statusEqual(a, b v1alpha1.BGPPeerStatus) bool {
	strip := func(s v1alpha1.BGPPeerStatus) v1alpha1.BGPPeerStatus {
		s.Conditions = slices.Clone(s.Conditions)
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		return s
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}
