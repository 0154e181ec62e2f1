// Package bgppeers turns BGPPeer objects, their password Secrets and the
// Nodes into each node's BGP set-up for its speaker, and the speakers'
// session reports into BGPPeer status.
package bgppeers

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
)

// Secrets finds a BGP password Secret in IronLB's namespace by name; nil,
// nil when it does not exist. It may return Secrets of any type: only
// those of type v1alpha1.BGPPasswordSecretType are used.
type Secrets func(name string) (*v1.Secret, error)

// Problem is why one peer cannot be used on one node (or on any: Node "").
// Message goes to the BGPPeer's status and Events; Detail, when set, only
// to the CCM's log (it may say what a BGPPeer editor must not learn, such
// as whether a Secret exists).
type Problem struct {
	Peer, Node string
	Reason     Reason
	Message    string
	Detail     string
}

// Reason is a typed cause of a Problem.
type Reason string

// Reasons of Problems; they are the BGPPeer's condition reasons too.
const (
	ReasonInvalidSelector Reason = "InvalidSelector"
	ReasonUnsupported     Reason = "Unsupported"
	ReasonRouterID        Reason = "RouterID"
	ReasonDuplicate       Reason = "DuplicateAddress"
)

// Defaults the CRD fills in, applied again here for objects written
// before a default existed.
const (
	defaultHoldTime      = 90 * time.Second
	defaultConnectRetry  = 5 * time.Second
	defaultBFDInterval   = 300 * time.Millisecond
	defaultBFDMultiplier = 3
	defaultRestartTime   = 120 * time.Second
)

// Selected returns the peers whose nodeSelector matches node, sorted by
// name, and the problems of peers whose selector is invalid.
func Selected(node *v1.Node, peers []*v1alpha1.BGPPeer) ([]*v1alpha1.BGPPeer, []Problem) {
	var out []*v1alpha1.BGPPeer
	var problems []Problem
	for _, p := range peers {
		sel, err := selector(p.Spec.NodeSelector)
		if err != nil {
			problems = append(problems, Problem{Peer: p.Name, Reason: ReasonInvalidSelector,
				Message: fmt.Sprintf("spec.nodeSelector: %v", err)})
			continue
		}
		if sel.Matches(labels.Set(node.Labels)) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *v1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	return out, problems
}

func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

// BGPConfigFor returns the BGP set-up of node's speaker: a session with every
// peer selecting the node that can be used, and the problems of those
// that cannot (a password Secret that cannot be used, an unsupported
// setting, no router ID). A peer's problem never takes another peer down. The set-up is nil
// when no peer selects the node.
func BGPConfigFor(node *v1.Node, peers []*v1alpha1.BGPPeer, secrets Secrets) (*speakerv1.BGPConfig, []Problem) {
	selected, problems := Selected(node, peers)
	if len(selected) == 0 {
		return nil, problems
	}
	v4, v6 := nodeIPs(node)
	cfg := &speakerv1.BGPConfig{}
	if v6.IsValid() {
		cfg.NextHopV6 = v6.String()
	}
	byAddr := map[string]string{}
	for _, p := range selected {
		if other, dup := byAddr[p.Spec.PeerAddress]; dup {
			// One session per router address: the first peer by name
			// keeps it.
			problems = append(problems, Problem{Peer: p.Name, Node: node.Name, Reason: ReasonDuplicate,
				Message: fmt.Sprintf("BGPPeer %s has the same peerAddress %s on node %s; a node holds one session per address", other, p.Spec.PeerAddress, node.Name)})
			continue
		}
		byAddr[p.Spec.PeerAddress] = p.Name
		bp, prob := sessionFor(node.Name, p, secrets)
		if prob != nil {
			problems = append(problems, *prob)
			continue
		}
		id := p.Spec.RouterID
		if id == "" && v4.IsValid() {
			id = v4.String()
		}
		switch {
		case id == "":
			problems = append(problems, Problem{Peer: p.Name, Node: node.Name, Reason: ReasonRouterID,
				Message: fmt.Sprintf("node %s has no IPv4 InternalIP to use as the BGP router ID: set spec.routerID", node.Name)})
			continue
		case cfg.RouterId == "":
			cfg.RouterId = id
			cfg.Asn = uint32(p.Spec.MyASN)
		case cfg.RouterId != id:
			// One BGP speaker has one identifier.
			problems = append(problems, Problem{Peer: p.Name, Node: node.Name, Reason: ReasonRouterID,
				Message: fmt.Sprintf("router ID %s differs from %s, which another peer of node %s uses; a node has one router ID", id, cfg.RouterId, node.Name)})
			continue
		}
		cfg.Peers = append(cfg.Peers, bp)
	}
	if len(cfg.Peers) == 0 {
		return nil, problems
	}
	return cfg, problems
}

// sessionFor is p as node's speaker holds it.
func sessionFor(node string, p *v1alpha1.BGPPeer, secrets Secrets) (*speakerv1.BGPPeer, *Problem) {
	s := p.Spec
	hold := defaultHoldTime
	if s.HoldTime != nil {
		hold = s.HoldTime.Duration
	}
	if hold == 0 {
		return nil, &Problem{Peer: p.Name, Reason: ReasonUnsupported,
			Message: "holdTime 0s (no keepalives) is not supported by the speakers' BGP implementation (gobgp v3); use 3s or more"}
	}
	retry := defaultConnectRetry
	if s.ConnectRetryTime != nil {
		retry = s.ConnectRetryTime.Duration
	}
	bp := &speakerv1.BGPPeer{
		Name:                p.Name,
		Address:             s.PeerAddress,
		Port:                uint32(s.PeerPort),
		PeerAsn:             uint32(s.PeerASN),
		MyAsn:               uint32(s.MyASN),
		SourceAddress:       s.SourceAddress,
		HoldTimeSeconds:     uint32(hold / time.Second),
		ConnectRetrySeconds: uint32((retry + time.Second - 1) / time.Second),
	}
	if s.KeepaliveTime != nil {
		bp.KeepaliveSeconds = uint32(s.KeepaliveTime.Duration / time.Second)
	}
	if s.EBGPMultihop != nil {
		bp.EbgpMultihop = uint32(*s.EBGPMultihop)
	}
	if b := s.BFD; b != nil && b.Enabled {
		bp.Bfd = &speakerv1.BFD{
			ReceiveIntervalMs:  millis(b.ReceiveInterval, defaultBFDInterval),
			TransmitIntervalMs: millis(b.TransmitInterval, defaultBFDInterval),
			DetectMultiplier:   defaultBFDMultiplier,
		}
		if b.DetectMultiplier != nil {
			bp.Bfd.DetectMultiplier = uint32(*b.DetectMultiplier)
		}
	}
	if g := s.GracefulRestart; g != nil && g.Enabled {
		rt := defaultRestartTime
		if g.RestartTime != nil {
			rt = g.RestartTime.Duration
		}
		bp.GracefulRestart = &speakerv1.GracefulRestart{RestartTimeSeconds: uint32((rt + time.Second - 1) / time.Second)}
	}
	if ref := s.PasswordSecretRef; ref != nil {
		pw, prob := password(p.Name, ref, secrets)
		if prob != nil {
			return nil, prob
		}
		bp.Password = pw
	}
	return bp, nil
}

// millis is d in milliseconds, def when d is unset.
func millis(d *metav1.Duration, def time.Duration) uint32 {
	if d != nil {
		def = d.Duration
	}
	return uint32(def / time.Millisecond)
}

// nodeIPs returns node's first IPv4 and IPv6 InternalIPs.
func nodeIPs(node *v1.Node) (v4, v6 netip.Addr) {
	for _, a := range node.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		switch {
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !ip.Is4In6() && !v6.IsValid():
			v6 = ip
		}
	}
	return v4, v6
}
