// Package status gathers what `kubectl ironlb status` shows: pools and
// their usage, every VIP with the nodes announcing it, the speakers and
// their versions, and the BGP sessions per node and peer. It reads what
// IronLB writes to the API (IPPool and BGPPeer status, the Services'
// status.loadBalancer and ironlb.dev/Announced condition, the speaker
// pods) and, when given, the CCM's metrics endpoint.
package status

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/loadbalancer/announced"
)

// ConditionAnnounced is the Service condition the CCM writes
// (announced.Condition).
const ConditionAnnounced = announced.Condition

// SpeakerSelector selects the speaker pods of the shipped manifests.
const SpeakerSelector = "app.kubernetes.io/name=ironlb-speaker"

// DefaultLoadBalancerClass is the class IronLB serves unless its cloud
// config names another (loadBalancerClass.name).
const DefaultLoadBalancerClass = "ironlb.dev/ironlb"

// Options says where to look.
type Options struct {
	// Namespace is IronLB's namespace, where the speaker pods run.
	Namespace string
	// LoadBalancerClass is the class IronLB serves, as its cloud config's
	// loadBalancerClass.name says: Services of that class are listed
	// besides class-less ones. "" is DefaultLoadBalancerClass.
	LoadBalancerClass string
	// OnlyClass mirrors the cloud config's loadBalancerClass.only: IronLB
	// serves no class-less Service, so none is listed.
	OnlyClass bool
	// MetricsURL is the CCM's /metrics; empty skips it.
	MetricsURL string
	// HTTPClient fetches MetricsURL.
	HTTPClient *http.Client
	// ControlPlane says how to read the control-plane speakers.
	ControlPlane ControlPlaneOptions
}

// Status is what the command shows.
type Status struct {
	Pools    []Pool    `json:"pools"`
	VIPs     []VIP     `json:"vips"`
	Speakers []Speaker `json:"speakers"`
	Sessions []Session `json:"bgpSessions"`
	// Metrics says whether the CCM's metrics were read.
	Metrics *Metrics `json:"metrics,omitempty"`
	// ControlPlane is the control-plane VIP (nil when the cluster runs
	// no control-plane speaker).
	ControlPlane *ControlPlane `json:"controlPlane,omitempty"`
}

// Pool is one IPPool.
type Pool struct {
	Name       string   `json:"name"`
	Mode       string   `json:"mode"`
	Addresses  []string `json:"addresses"`
	AutoAssign bool     `json:"autoAssign"`
	Priority   int32    `json:"priority"`
	Used       int64    `json:"used"`
	TotalIPv4  string   `json:"totalIPv4,omitempty"`
	FreeIPv4   string   `json:"freeIPv4,omitempty"`
	TotalIPv6  string   `json:"totalIPv6,omitempty"`
	FreeIPv6   string   `json:"freeIPv6,omitempty"`
	// Ready is the Ready condition's status ("" when the CCM has not
	// written one), with its message when it is not True.
	Ready        string `json:"ready"`
	ReadyMessage string `json:"readyMessage,omitempty"`
	// Conflicting is the message of Conflicting=True, else "".
	Conflicting string `json:"conflicting,omitempty"`
}

// VIP is one address of a Service of type LoadBalancer ("" while
// pending).
type VIP struct {
	Service string `json:"service"`
	// Class is the Service's spec.loadBalancerClass ("" for none).
	Class   string `json:"loadBalancerClass,omitempty"`
	Address string `json:"address"`
	Pool    string `json:"pool,omitempty"`
	// Layer2 are the nodes answering ARP/NDP for it, BGP the nodes
	// advertising it, as the Announced condition says.
	Layer2 []string `json:"layer2,omitempty"`
	BGP    []string `json:"bgp,omitempty"`
	// SharingKey is the key the address is shared under.
	SharingKey string `json:"sharingKey,omitempty"`
	// State is Announced, NoAnnouncingNode, Pending (no address) or
	// Unknown (no condition yet).
	State string `json:"state"`
}

// Speaker is one node's speaker.
type Speaker struct {
	Node    string `json:"node"`
	Pod     string `json:"pod,omitempty"`
	Ready   bool   `json:"ready"`
	Version string `json:"version,omitempty"`
	// Connected and Healthy come from the CCM's metrics (nil without).
	Connected *bool `json:"connected,omitempty"`
	Healthy   *bool `json:"healthy,omitempty"`
}

// Session is one node's BGP session with a peer.
type Session struct {
	Peer        string       `json:"peer"`
	PeerAddress string       `json:"peerAddress"`
	Node        string       `json:"node"`
	State       string       `json:"state"`
	Since       *metav1.Time `json:"since,omitempty"`
	Routes      int32        `json:"advertisedRoutes"`
	BFD         string       `json:"bfd,omitempty"`
	LastError   string       `json:"lastError,omitempty"`
}

// Metrics is where metrics came from, or why not.
type Metrics struct {
	URL   string `json:"url"`
	Error string `json:"error,omitempty"`
}

// Gather reads the status from the API and, if set, the metrics URL. An
// unreachable metrics URL is reported in Status.Metrics, not as an error.
func Gather(ctx context.Context, kube kubernetes.Interface, dyn dynamic.Interface, opts Options) (*Status, error) {
	st := &Status{Pools: []Pool{}, VIPs: []VIP{}, Speakers: []Speaker{}, Sessions: []Session{}}
	pools, err := listPools(ctx, dyn)
	if err != nil {
		return nil, err
	}
	for _, p := range pools {
		st.Pools = append(st.Pools, pool(p))
	}
	svcs, err := kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing Services: %w", err)
	}
	class := opts.LoadBalancerClass
	if class == "" {
		class = DefaultLoadBalancerClass
	}
	for i := range svcs.Items {
		if served(&svcs.Items[i], class, opts.OnlyClass) {
			st.VIPs = append(st.VIPs, vips(&svcs.Items[i], pools)...)
		}
	}
	if err := st.speakers(ctx, kube, opts); err != nil {
		return nil, err
	}
	peers, err := dyn.Resource(v1alpha1.BGPPeerResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing BGPPeers: %w", err)
	}
	for i := range peers.Items {
		p, err := v1alpha1.FromUnstructured[v1alpha1.BGPPeer](&peers.Items[i])
		if err != nil {
			return nil, err
		}
		for _, s := range p.Status.Sessions {
			sess := Session{Peer: p.Name, PeerAddress: p.Spec.PeerAddress, Node: s.Node, State: s.State,
				Since: s.Since, Routes: s.AdvertisedRoutes, LastError: s.LastError}
			if s.BFD != nil {
				sess.BFD = s.BFD.State
			}
			st.Sessions = append(st.Sessions, sess)
		}
	}
	sort.Slice(st.Sessions, func(i, j int) bool {
		a, b := st.Sessions[i], st.Sessions[j]
		return a.Peer < b.Peer || a.Peer == b.Peer && a.Node < b.Node
	})
	st.ControlPlane = GatherControlPlane(ctx, kube, opts.ControlPlane)
	if opts.MetricsURL != "" {
		st.Metrics = &Metrics{URL: opts.MetricsURL}
		conn, err := scrape(ctx, opts.HTTPClient, opts.MetricsURL)
		if err != nil {
			st.Metrics.Error = err.Error()
		} else {
			st.mergeMetrics(conn)
		}
	}
	return st, nil
}

func listPools(ctx context.Context, dyn dynamic.Interface) ([]*v1alpha1.IPPool, error) {
	list, err := dyn.Resource(v1alpha1.IPPoolResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing IPPools (is IronLB installed?): %w", err)
	}
	var out []*v1alpha1.IPPool
	for i := range list.Items {
		p, err := v1alpha1.FromUnstructured[v1alpha1.IPPool](&list.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func pool(p *v1alpha1.IPPool) Pool {
	out := Pool{Name: p.Name, Mode: "layer2", AutoAssign: p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		Priority: p.Spec.Priority, Used: p.Status.Used}
	switch {
	case p.Spec.BGP != nil && p.Spec.Layer2 != nil:
		out.Mode = "layer2+bgp"
	case p.Spec.BGP != nil:
		out.Mode = "bgp"
	}
	for _, a := range p.Spec.Addresses {
		out.Addresses = append(out.Addresses, string(a))
	}
	if c := p.Status.IPv4; c != nil {
		out.TotalIPv4, out.FreeIPv4 = c.Total, c.Free
	}
	if c := p.Status.IPv6; c != nil {
		out.TotalIPv6, out.FreeIPv6 = c.Total, c.Free
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		out.Ready = string(c.Status)
		if c.Status != metav1.ConditionTrue {
			out.ReadyMessage = c.Message
		}
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionConflicting); c != nil && c.Status == metav1.ConditionTrue {
		out.Conflicting = c.Message
	}
	return out
}

// served is true for a Service of type LoadBalancer that IronLB serves:
// one of its class, or a class-less one unless it serves only its class.
// Services of other classes are another load balancer's.
func served(svc *corev1.Service, class string, only bool) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return !only
	}
	return *svc.Spec.LoadBalancerClass == class
}

// vips lists a LoadBalancer Service's addresses with their announcers.
func vips(svc *corev1.Service, pools []*v1alpha1.IPPool) []VIP {
	key := svc.Namespace + "/" + svc.Name
	var class string
	if svc.Spec.LoadBalancerClass != nil {
		class = *svc.Spec.LoadBalancerClass
	}
	if len(svc.Status.LoadBalancer.Ingress) == 0 {
		return []VIP{{Service: key, Class: class, State: "Pending"}}
	}
	var own []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			own = append(own, a)
		}
	}
	cond := meta.FindStatusCondition(svc.Status.Conditions, ConditionAnnounced)
	var ann map[netip.Addr]Announcement
	if cond != nil {
		ann = ParseAnnounced(cond.Message, own)
	}
	var out []VIP
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP == "" {
			continue
		}
		v := VIP{Service: key, Class: class, Address: in.IP, Pool: poolOf(in.IP, pools), State: "Unknown"}
		ip, err := netip.ParseAddr(in.IP)
		if a, ok := ann[ip]; ok && err == nil {
			v.Layer2, v.BGP, v.SharingKey = a.Layer2, a.BGP, a.SharingKey
			v.State = cond.Reason
		}
		out = append(out, v)
	}
	return out
}

// poolOf is the first pool (by name) whose addresses hold ip.
func poolOf(ip string, pools []*v1alpha1.IPPool) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	for _, p := range pools {
		for _, r := range p.Spec.Addresses {
			if contains(string(r), a) {
				return p.Name
			}
		}
	}
	return ""
}

func contains(r string, a netip.Addr) bool {
	if pfx, err := netip.ParsePrefix(r); err == nil {
		return pfx.Contains(a)
	}
	from, to, ok := strings.Cut(r, "-")
	f, err1 := netip.ParseAddr(strings.TrimSpace(from))
	t, err2 := netip.ParseAddr(strings.TrimSpace(to))
	return ok && err1 == nil && err2 == nil && f.Compare(a) <= 0 && a.Compare(t) <= 0
}

func (st *Status) speakers(ctx context.Context, kube kubernetes.Interface, opts Options) error {
	pods, err := kube.CoreV1().Pods(opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: SpeakerSelector})
	if err != nil {
		return fmt.Errorf("listing speaker pods in %s: %w", opts.Namespace, err)
	}
	for _, p := range pods.Items {
		s := Speaker{Node: p.Spec.NodeName, Pod: p.Name}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				s.Ready = c.Status == corev1.ConditionTrue
			}
		}
		for _, c := range p.Spec.Containers {
			if c.Name == "speaker" || len(p.Spec.Containers) == 1 {
				s.Version = imageTag(c.Image)
			}
		}
		st.Speakers = append(st.Speakers, s)
	}
	sort.Slice(st.Speakers, func(i, j int) bool { return st.Speakers[i].Node < st.Speakers[j].Node })
	return nil
}

// imageTag is the tag of an image reference ("" for none or a digest).
func imageTag(image string) string {
	image, _, _ = strings.Cut(image, "@")
	slash := strings.LastIndex(image, "/")
	if i := strings.LastIndex(image, ":"); i > slash {
		return image[i+1:]
	}
	return ""
}

// Age is how long ago t was, as kubectl writes it.
func Age(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return shortDuration(now.Sub(t.Time))
}
