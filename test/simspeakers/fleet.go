// Package simspeakers hosts many simulated IronLB speakers in one process,
// for scale tests of the real CCM. Each runs the real speaker code path as
// far as a process without raw sockets can: the real speaker.Agent, the
// real node credentials (pki.NodeCredentials, enrolled with a real
// projected token) and a gRPC server with the real speaker's options
// (guard.ServerOptions), listening on its node's own address at the port
// the CCM dials. Only the data plane is simulated: layer 2 records what it
// would answer for (Recorder), BGP reports every peer Established (BGP).
package simspeakers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/test/rig"
)

// Options configures a Fleet.
type Options struct {
	// Client creates the Nodes, speaker Pods and tokens (an admin client).
	Client kubernetes.Interface
	// Namespace is the CCM's (speakers.secretNamespace): the speakers'
	// ServiceAccount, Pods and the ironlb-ca-bundle ConfigMap are there.
	Namespace string
	// Nodes is how many nodes to simulate.
	Nodes int
	// FirstAddr is the first node's address; the others follow it. The
	// caller makes them bindable where Listen listens (for example a
	// local route in a network namespace): the CCM refuses to dial
	// loopback addresses.
	FirstAddr netip.Addr
	// Prefixes, if set, replace FirstAddr: node addresses are taken in
	// order from each (without its network and IPv4 broadcast
	// addresses), so a fleet can outgrow one /24. The caller makes every
	// prefix bindable where Listen listens.
	Prefixes []netip.Prefix
	// Port is where speakers listen: the CCM's speakers.port (default speakerv1.DefaultPort).
	Port int
	// CABundle is the CAs the speakers trust for the CCM (the
	// ironlb-ca-bundle ConfigMap's ca.crt); empty: read from that
	// ConfigMap once the CCM has written it.
	CABundle []byte
	// Dir receives each speaker's mounted files (ca.crt, tokens); empty:
	// a temporary folder removed by Stop.
	Dir string
	// Listen opens a speaker's listener (default net.Listen).
	Listen func(network, addr string) (net.Listener, error)
	// NamePrefix names the nodes <prefix>-0000, … (default "sim").
	NamePrefix string
	// Log is the agents' logger (default: discard).
	Log logr.Logger
}

// Fleet is a set of simulated speakers.
type Fleet struct {
	opts     Options
	ownDir   bool
	speakers []*Speaker
	byNode   map[string]*Speaker
}

// NodeName returns the name of the i-th simulated node.
func NodeName(prefix string, i int) string { return fmt.Sprintf("%s-%04d", prefix, i) }

// Start registers opts.Nodes Nodes (as a kubelet with
// --cloud-provider=external and --node-ip does: the CCM initializes them),
// a speaker Pod bound to each and a token for it, and starts their
// speakers. On error, what was started is stopped.
func Start(ctx context.Context, opts Options) (f *Fleet, err error) {
	if opts.Client == nil || opts.Namespace == "" || opts.Nodes <= 0 || !opts.FirstAddr.IsValid() && len(opts.Prefixes) == 0 {
		return nil, errors.New("simspeakers: Client, Namespace, Nodes and FirstAddr or Prefixes are required")
	}
	if opts.Port == 0 {
		opts.Port = speakerv1.DefaultPort
	}
	if opts.Listen == nil {
		opts.Listen = net.Listen
	}
	if opts.NamePrefix == "" {
		opts.NamePrefix = "sim"
	}
	if opts.Log.GetSink() == nil {
		opts.Log = logr.Discard()
	}
	f = &Fleet{opts: opts, byNode: map[string]*Speaker{}}
	if f.opts.Dir == "" {
		if f.opts.Dir, err = os.MkdirTemp("", "simspeakers-"); err != nil {
			return nil, fmt.Errorf("simspeakers: %w", err)
		}
		f.ownDir = true
	}
	defer func() {
		if err != nil {
			f.Stop()
		}
	}()
	bundle := opts.CABundle
	if len(bundle) == 0 {
		if bundle, err = waitBundle(ctx, opts.Client, opts.Namespace); err != nil {
			return f, err
		}
	}
	caFile := filepath.Join(f.opts.Dir, pki.CACertKey)
	if err := pki.WriteBundle(caFile, bundle); err != nil {
		return f, fmt.Errorf("simspeakers: writing the CA bundle: %w", err)
	}
	addrs, err := nodeAddrs(opts.FirstAddr, opts.Prefixes, opts.Nodes)
	if err != nil {
		return f, err
	}
	f.speakers = make([]*Speaker, opts.Nodes)
	var wg sync.WaitGroup
	errs := make([]error, opts.Nodes)
	next := make(chan int)
	for range min(8, opts.Nodes) {
		wg.Go(func() {
			for i := range next {
				f.speakers[i], errs[i] = f.startNode(ctx, i, addrs[i], caFile)
			}
		})
	}
	for i := range opts.Nodes {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, s := range f.speakers {
		if s != nil {
			f.byNode[s.Node] = s
		}
	}
	return f, errors.Join(errs...)
}

// startNode registers node i at addr and starts its speaker.
func (f *Fleet) startNode(ctx context.Context, i int, addr netip.Addr, caFile string) (*Speaker, error) {
	name := NodeName(f.opts.NamePrefix, i)
	if _, err := rig.RegisterNode(ctx, f.opts.Client, name, addr.String(), nil); err != nil {
		return nil, fmt.Errorf("simspeakers: %w", err)
	}
	token, err := rig.SpeakerToken(ctx, f.opts.Client, f.opts.Namespace, name, name)
	if err != nil {
		return nil, fmt.Errorf("simspeakers: %w", err)
	}
	tokenFile := filepath.Join(f.opts.Dir, name+".token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return nil, fmt.Errorf("simspeakers: writing %s's token: %w", name, err)
	}
	lis, err := f.opts.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(f.opts.Port)))
	if err != nil {
		return nil, fmt.Errorf("simspeakers: listening for %s: %w", name, err)
	}
	s, err := startSpeaker(name, addr, i, caFile, tokenFile, lis, f.opts.Log.WithValues("node", name))
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("simspeakers: %w", err)
	}
	return s, nil
}

// waitBundle waits (at most a minute) for the CCM's ironlb-ca-bundle
// ConfigMap and returns its CAs.
func waitBundle(ctx context.Context, client kubernetes.Interface, ns string) ([]byte, error) {
	var bundle string
	err := rig.Eventually(time.Minute, func() error {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, pki.BundleConfigMapName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if bundle = cm.Data[pki.CACertKey]; bundle == "" {
			return fmt.Errorf("ConfigMap %s/%s has no %s", ns, pki.BundleConfigMapName, pki.CACertKey)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("simspeakers: waiting for the CCM's CA bundle: %w", err)
	}
	return []byte(bundle), nil
}

// Speakers returns the speakers, in node order.
func (f *Fleet) Speakers() []*Speaker { return f.speakers }

// Speaker returns node's speaker, nil if there is none.
func (f *Fleet) Speaker(node string) *Speaker { return f.byNode[node] }

// Announced returns the layer-2 addresses node's speaker answers for now,
// each with when it began to (a killed speaker's as they were when it
// died); nil for an unknown node.
func (f *Fleet) Announced(node string) map[netip.Addr]time.Time {
	if s := f.byNode[node]; s != nil {
		return s.Recorder.Announced()
	}
	return nil
}

// Received returns how many instructions other than heartbeats node's
// speaker received (snapshots, updates, certificates, attests).
func (f *Fleet) Received(node string) int {
	s := f.byNode[node]
	if s == nil {
		return 0
	}
	n := 0
	for kind, c := range s.Received() {
		if kind != "heartbeat" {
			n += c
		}
	}
	return n
}

// Owners returns, for every layer-2 address a live speaker answers for,
// the nodes answering for it.
func (f *Fleet) Owners() map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, s := range f.speakers {
		if s == nil || s.Killed() {
			continue
		}
		for a := range s.Recorder.Announced() {
			out[a] = append(out[a], s.Node)
		}
	}
	return out
}

// Advertised returns the addresses node's speaker exports over BGP now
// (to any peer), each with when its export began; nil for an unknown node.
func (f *Fleet) Advertised(node string) map[netip.Addr]time.Time {
	s := f.byNode[node]
	if s == nil {
		return nil
	}
	out := map[netip.Addr]time.Time{}
	for p, at := range s.BGP.Exported() {
		out[p.Addr()] = at
	}
	return out
}

// Advertisers returns, for every address a live speaker exports over BGP,
// the nodes exporting it.
func (f *Fleet) Advertisers() map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, s := range f.speakers {
		if s == nil || s.Killed() {
			continue
		}
		for p := range s.BGP.Exported() {
			out[p.Addr()] = append(out[p.Addr()], s.Node)
		}
	}
	return out
}

// Kill stops node's speaker as if its process died (Speaker.Kill).
func (f *Fleet) Kill(node string) error {
	s := f.byNode[node]
	if s == nil {
		return fmt.Errorf("simspeakers: no speaker on node %q", node)
	}
	s.Kill()
	return nil
}

// Stop kills every speaker and removes the temporary folder. The Nodes and
// Pods stay (the API server is the caller's).
func (f *Fleet) Stop() {
	var wg sync.WaitGroup
	for _, s := range f.speakers {
		if s != nil {
			wg.Go(s.Kill)
		}
	}
	wg.Wait()
	if f.ownDir {
		_ = os.RemoveAll(f.opts.Dir)
	}
}

// Arrivals returns, for every speaker (killed ones too) told about address,
// when the latest instruction announcing or withdrawing it arrived there.
func (f *Fleet) Arrivals(address string) map[string]Arrival {
	out := map[string]Arrival{}
	for _, s := range f.speakers {
		if s == nil {
			continue
		}
		if a, ok := s.Arrival(address); ok {
			out[s.Node] = a
		}
	}
	return out
}
