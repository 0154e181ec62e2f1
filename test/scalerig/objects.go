package scalerig

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/simspeakers"
)

// The pools: IPv6 (enough addresses for 10,000 Services each), disjoint
// from the nodes and the namespace. Every Service names its pool with the
// ironlb.dev/pool annotation, as users pick one.
var (
	L2Pool  = netip.MustParsePrefix("2001:db8:1000::/112")
	BGPPool = netip.MustParsePrefix("2001:db8:2000::/112")
)

const (
	l2PoolName  = "scale-l2"
	bgpPoolName = "scale-bgp"
	// poolAnnotation is loadbalancer's AnnotationPool.
	poolAnnotation = "ironlb.dev/pool"
	// peerAddress is the BGPPeer's router: nobody listens there, the
	// simulated speakers report the session Established.
	peerAddress = "203.0.113.254"
	// routerID is every node's BGP identifier: nodes beyond 508 have
	// only IPv6 addresses, and the default (the node's IPv4 InternalIP)
	// would leave them without one. The simulated sessions reach no
	// router, so one identifier for all does no harm.
	routerID = "203.0.113.2"
	// Namespace holds the rig's Services.
	Namespace = "default"
	// localEvery: every localEvery-th Service is a BGP one with
	// externalTrafficPolicy Local (one BGP Service in ten).
	localEvery = 20
	// endpointNodes is how many nodes a Local Service's endpoints are on.
	endpointNodes = 3
)

// Kind is how a Service's VIP is announced.
type Kind int

const (
	// L2 Services are in the layer-2 pool: one node answers.
	L2 Kind = iota
	// BGP Services are in the BGP pool: every node advertises.
	BGP
	// Local Services are BGP ones with externalTrafficPolicy Local: the
	// nodes with a ready endpoint advertise.
	Local
)

func (k Kind) String() string { return [...]string{"l2", "bgp", "local"}[k] }

// layer2Only makes every Service a layer-2 one (Options.Layer2Only); set
// by Start, one rig per process.
var layer2Only bool

// KindOf is the kind of the i-th Service of a batch: even ones layer 2,
// odd ones BGP, one BGP Service in ten Local (all layer 2 with
// Options.Layer2Only).
func KindOf(i int) Kind {
	switch {
	case layer2Only || i%2 == 0:
		return L2
	case i%localEvery == 1:
		return Local
	}
	return BGP
}

// applyPools applies the two pools and the BGP peer.
func (r *Rig) applyPools(ctx context.Context) error {
	objs := fmt.Sprintf(`apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata: {name: %s}
spec:
  addresses: ["%s"]
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata: {name: %s}
spec:
  addresses: ["%s"]
  bgp: {}
---
apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata: {name: scale-router}
spec: {peerAddress: "%s", peerASN: 64512, myASN: 64513, routerID: "%s"}
`, l2PoolName, L2Pool, bgpPoolName, BGPPool, peerAddress, routerID)
	return rig.Eventually(30*time.Second, func() error {
		out, err := r.CP.KubectlStdin(ctx, objs, "apply", "-f", "-")
		if err != nil {
			return fmt.Errorf("applying the pools and the BGP peer: %w\n%s", err, out)
		}
		return nil
	})
}

// shape makes svc (named <prefix>-<i>) single-stack IPv6 without node
// ports and of KindOf(i): its pool annotation, and externalTrafficPolicy
// Local for Local. The API server's node-port range (30000-32767) holds
// 2,768 ports, so more LoadBalancer Services than that need
// allocateLoadBalancerNodePorts: false, as IronLB's VIPs do not use them.
func shape(svc *corev1.Service) {
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	svc.Spec.AllocateLoadBalancerNodePorts = new(false)
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	switch KindOf(index(svc.Name)) {
	case L2:
		svc.Annotations[poolAnnotation] = l2PoolName
	case Local:
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		fallthrough
	case BGP:
		svc.Annotations[poolAnnotation] = bgpPoolName
	}
}

// index is the number at the end of a Service's name (scale.Name).
func index(name string) int {
	i, _ := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
	return i
}

// kindOfService is the Kind of a Service the rig made.
func kindOfService(svc *corev1.Service) Kind {
	switch {
	case svc.Annotations[poolAnnotation] == l2PoolName:
		return L2
	case svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal:
		return Local
	}
	return BGP
}

// localNodes are the endpoint nodes of the k-th Local Service, shifted by
// shift nodes: endpointNodes consecutive nodes, spread over the fleet.
func (r *Rig) localNodes(k, shift int) []string {
	out := make([]string, endpointNodes)
	for j := range out {
		out[j] = simspeakers.NodeName("sim", (endpointNodes*k+j+shift)%r.opts.Nodes)
	}
	return out
}

// endpointSlice is the EndpointSlice of Service name with one ready
// endpoint on each of nodes (addresses from a documentation range).
func endpointSlice(name string, nodes []string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-scale", Namespace: Namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "scalerig.ironlb.dev",
		}},
		AddressType: discoveryv1.AddressTypeIPv6,
		Ports:       []discoveryv1.EndpointPort{{Port: new(int32(8080)), Protocol: new(corev1.ProtocolTCP)}},
	}
	for j, n := range nodes {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("2001:db8:e000::%x:%x", index(name), j+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			NodeName:   new(n),
		})
	}
	return es
}

// createSlices creates the EndpointSlices of the Local Services among
// prefix-0000 … prefix-(m-1), 8 at a time, and notes their nodes.
func (r *Rig) createSlices(ctx context.Context, prefix string, m int) error {
	var todo []int
	for i := range m {
		if KindOf(i) == Local {
			todo = append(todo, i)
		}
	}
	var mu sync.Mutex
	var errs []error
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				name := fmt.Sprintf("%s-%04d", prefix, i)
				nodes := r.localNodes(i/localEvery, 0)
				_, err := r.CP.Client.DiscoveryV1().EndpointSlices(Namespace).Create(ctx, endpointSlice(name, nodes), metav1.CreateOptions{})
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("creating %s's EndpointSlice: %w", name, err))
				} else {
					r.local[name] = nodes
				}
				mu.Unlock()
			}
		})
	}
	for _, i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}
