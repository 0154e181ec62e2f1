package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/loadbalancer/kubeadm"
)

// ControlPlaneNodeLabel marks control-plane nodes (kubeadm sets it).
const ControlPlaneNodeLabel = "node-role.kubernetes.io/control-plane"

// DefaultControlPlanePort is the control-plane speaker's health port,
// which serves /status.
const DefaultControlPlanePort = 7476

// Bounds on reading the control-plane speakers' /status: each answer is
// at most maxControlPlaneStatus bytes and takes at most the per-node
// timeout; at most controlPlaneParallel nodes are asked at once, at most
// maxControlPlaneNodes in all.
const (
	maxControlPlaneStatus   = 64 << 10
	controlPlaneParallel    = 8
	maxControlPlaneNodes    = 64
	DefaultControlPlaneWait = 3 * time.Second
)

// ControlPlaneOptions says how to read the control-plane speakers.
type ControlPlaneOptions struct {
	// Port is the speakers' health port (default DefaultControlPlanePort).
	Port int
	// Timeout bounds each node's answer (default DefaultControlPlaneWait).
	Timeout time.Duration
}

// ControlPlane is the control-plane VIP as its speakers see it.
type ControlPlane struct {
	// VIP is the VIP the speakers serve (several when they disagree), or,
	// when none answered, kubeadm-config's controlPlaneEndpoint.
	VIPs []string `json:"vips"`
	// Mode is "l2" or "bgp" (several when the speakers disagree).
	Modes []string `json:"modes,omitempty"`
	// Holders are the nodes the answering speakers believe hold the VIP
	// (layer 2); more than one means a partition (or a move under way).
	Holders []string `json:"holders,omitempty"`
	// Serving are the nodes that say they serve it: the holder in layer 2,
	// the advertisers in BGP.
	Serving []string `json:"serving,omitempty"`
	// Disagreement says how the speakers disagree ("" when they agree).
	Disagreement string `json:"disagreement,omitempty"`
	// Error is why the control-plane nodes could not be listed.
	Error string `json:"error,omitempty"`
	// Nodes are the control-plane nodes, by name.
	Nodes []ControlPlaneNode `json:"nodes"`
}

// ControlPlaneNode is one control-plane node's speaker.
type ControlPlaneNode struct {
	Node string `json:"node"`
	// Error is why its speaker's /status could not be read ("": read).
	Error string `json:"error,omitempty"`
	// Status is what it answered.
	Status *cpvip.Status `json:"status,omitempty"`
}

// GatherControlPlane reads every control-plane node's speaker /status
// through the API server's node proxy (GET
// /api/v1/nodes/<node>:<port>/proxy/status), and kube-system/kubeadm-config
// for the VIP. A node whose speaker does not answer is reported, not an
// error. It returns nil when no speaker answered and no VIP is known: the
// cluster runs no control-plane speaker.
func GatherControlPlane(ctx context.Context, kube kubernetes.Interface, opts ControlPlaneOptions) *ControlPlane {
	if opts.Port == 0 {
		opts.Port = DefaultControlPlanePort
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultControlPlaneWait
	}
	cp := &ControlPlane{Nodes: []ControlPlaneNode{}}
	kubeadmVIP := kubeadmVIP(ctx, kube)
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: ControlPlaneNodeLabel, Limit: maxControlPlaneNodes})
	if err != nil {
		if !kubeadmVIP.IsValid() {
			return nil
		}
		cp.VIPs = []string{kubeadmVIP.String()}
		cp.Error = fmt.Sprintf("listing control-plane nodes: %v", err)
		return cp
	}
	cp.Nodes = make([]ControlPlaneNode, len(nodes.Items))
	sem := make(chan struct{}, controlPlaneParallel)
	var wg sync.WaitGroup
	for i := range nodes.Items {
		name := nodes.Items[i].Name
		cp.Nodes[i].Node = name
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			st, err := readControlPlaneStatus(ctx, kube, name, opts)
			if err != nil {
				cp.Nodes[i].Error = err.Error()
			} else {
				cp.Nodes[i].Status = st
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(cp.Nodes, func(a, b ControlPlaneNode) int { return strings.Compare(a.Node, b.Node) })
	cp.summarize(kubeadmVIP)
	if len(cp.VIPs) == 0 {
		return nil
	}
	return cp
}

// kubeadmVIP is kubeadm-config's controlPlaneEndpoint when it is an IP
// address (zero when unknown or unreadable).
func kubeadmVIP(ctx context.Context, kube kubernetes.Interface) netip.Addr {
	cm, err := kube.CoreV1().ConfigMaps(kubeadm.Namespace).Get(ctx, kubeadm.Name, metav1.GetOptions{})
	if err != nil {
		return netip.Addr{}
	}
	ep, err := kubeadm.EndpointOf(cm)
	if err != nil {
		return netip.Addr{}
	}
	return ep.VIP
}

// readControlPlaneStatus reads one node's speaker /status through the
// node proxy: bounded in time and size, parsed strictly.
func readControlPlaneStatus(ctx context.Context, kube kubernetes.Interface, node string, opts ControlPlaneOptions) (*cpvip.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	body, err := kube.CoreV1().RESTClient().Get().
		Resource("nodes").Name(node + ":" + strconv.Itoa(opts.Port)).SubResource("proxy").Suffix("status").
		Stream(ctx)
	if err != nil {
		var se apierrors.APIStatus
		if errors.As(err, &se) {
			return nil, fmt.Errorf("unreachable: %s", se.Status().Message)
		}
		return nil, fmt.Errorf("unreachable: %w", err)
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, maxControlPlaneStatus+1))
	if err != nil {
		return nil, fmt.Errorf("unreachable: reading /status: %w", err)
	}
	if len(data) > maxControlPlaneStatus {
		return nil, fmt.Errorf("/status is larger than %d bytes", maxControlPlaneStatus)
	}
	return ParseControlPlaneStatus(data, node)
}

// ParseControlPlaneStatus parses a control-plane speaker's /status
// strictly: one JSON object of cpvip.Status with no unknown field, a VIP
// that is an IP address, a known mode, and the node it was asked for.
func ParseControlPlaneStatus(data []byte, node string) (*cpvip.Status, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st cpvip.Status
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("/status does not parse: %w", err)
	}
	if dec.More() {
		return nil, errors.New("/status does not parse: data after the object")
	}
	if _, err := netip.ParseAddr(st.VIP); err != nil {
		return nil, fmt.Errorf("/status names VIP %q, not an IP address", st.VIP)
	}
	if st.Mode != "l2" && st.Mode != "bgp" {
		return nil, fmt.Errorf("/status names mode %q, want l2 or bgp", st.Mode)
	}
	if st.Node != node {
		return nil, fmt.Errorf("/status of node %s says it is node %q", node, st.Node)
	}
	return &st, nil
}

// summarize fills in the VIP, modes, holders and servers from the nodes'
// answers, and says where they disagree.
func (cp *ControlPlane) summarize(kubeadmVIP netip.Addr) {
	var notes []string
	holderOf := map[string][]string{} // holder → nodes that believe it
	for _, n := range cp.Nodes {
		st := n.Status
		if st == nil {
			continue
		}
		addUnique(&cp.VIPs, st.VIP)
		addUnique(&cp.Modes, st.Mode)
		if st.Serving {
			addUnique(&cp.Serving, st.Node)
		}
		if st.Mode == "l2" {
			h := st.Holder
			if h == "" {
				h = "none"
			}
			holderOf[h] = append(holderOf[h], st.Node)
			if st.Holder != "" {
				addUnique(&cp.Holders, st.Holder)
			}
		}
	}
	if len(cp.VIPs) == 0 && kubeadmVIP.IsValid() {
		cp.VIPs = []string{kubeadmVIP.String()}
	}
	if len(cp.VIPs) > 1 {
		notes = append(notes, fmt.Sprintf("the speakers serve different VIPs %v", cp.VIPs))
	}
	if len(cp.Modes) > 1 {
		notes = append(notes, fmt.Sprintf("the speakers run in different modes %v", cp.Modes))
	}
	if len(holderOf) > 1 {
		var says []string
		for _, h := range slices.Sorted(maps.Keys(holderOf)) {
			says = append(says, fmt.Sprintf("%v see %s", holderOf[h], h))
		}
		notes = append(notes, "the nodes disagree about the holder ("+strings.Join(says, ", ")+"): a partition, or a move under way")
	}
	if slices.Contains(cp.Modes, "l2") && len(cp.Modes) == 1 && len(cp.Serving) > 1 {
		notes = append(notes, fmt.Sprintf("several nodes hold the VIP at once %v: a partition", cp.Serving))
	}
	cp.Disagreement = strings.Join(notes, "; ")
}

func addUnique(l *[]string, s string) {
	if !slices.Contains(*l, s) {
		*l = append(*l, s)
		slices.Sort(*l)
	}
}

// write writes the control-plane VIP section; every cell is
// escaped (the speakers' answers come from the network).
func (cp *ControlPlane) write(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCONTROL-PLANE VIP")
	line := "VIP " + list(cp.VIPs)
	if len(cp.Modes) > 0 {
		line += " (" + list(cp.Modes) + ")"
	}
	switch {
	case slices.Equal(cp.Modes, []string{"bgp"}):
		line += ", advertised by " + list(cp.Serving)
	case len(cp.Modes) > 0:
		line += ", held by " + list(cp.Serving)
	}
	fmt.Fprintln(tw, line)
	if cp.Disagreement != "" {
		fmt.Fprintln(tw, "WARNING: "+Escape(cp.Disagreement))
	}
	if cp.Error != "" {
		fmt.Fprintln(tw, "Control-plane nodes not listed: "+Escape(cp.Error))
	}
	if len(cp.Nodes) > 0 {
		fmt.Fprintln(tw, "NODE\tAPISERVER\tSERVING\tHOLDER SEEN\tEPOCH\tSPEAKER")
	}
	for _, n := range cp.Nodes {
		st := n.Status
		if st == nil {
			row(tw, n.Node, "-", "-", "-", "-", n.Error) // row escapes every cell
			continue
		}
		api := "ready"
		if !st.APIServerReady {
			api = "not ready"
			if st.APIServerError != "" {
				api += ": " + st.APIServerError
			}
		}
		holder, epoch := "-", "-"
		if st.Mode == "l2" {
			holder = dash(st.Holder)
			epoch = strconv.FormatUint(st.Epoch, 10)
		}
		row(tw, n.Node, api, yesNoBool(st.Serving), holder, epoch, "ok ("+st.NodeIP+")")
	}
	_ = tw.Flush()
}

func yesNoBool(b bool) string { return yesNo(&b) }
