package bgppeers

import (
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
)

// The controller's index: each node's usable peers and BGP set-up, as the
// last sync computed them from the BGPPeers, their Secrets and the Nodes.
// The planner reads it (planner.Peers): it gives the speakers their
// set-up (SetBGP) and advertises VIPs to the peers, so that BGP peer
// configuration reaches the speakers by one path.

// PeersOf implements planner.Peers: the usable peers that select node.
func (c *Controller) PeersOf(node string) []*v1alpha1.BGPPeer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byNode[node]
}

// BGPConfigs implements planner.Peers: every node's BGP set-up (nil: no
// sessions), by node name. The map and its set-ups are replaced, never
// changed, by a sync: they are to be read only.
func (c *Controller) BGPConfigs() map[string]*speakerv1.BGPConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.configs
}

// Synced implements planner.Peers: every node has had its set-up once.
func (c *Controller) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// OnChange implements planner.Peers: fn is called after a node's peers or
// set-up changed.
func (c *Controller) OnChange(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = append(c.onChange, fn)
}

// sync computes every node's peers and set-up, and tells the planner when
// either changed, so that it gives the speakers their new set-up and
// re-plans the advertisements. It is Synced only once the planner was told
// the first set-ups: no speaker may get a snapshot before (it would close
// its sessions).
func (c *Controller) sync() {
	peers := c.peers()
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	byNode := map[string][]*v1alpha1.BGPPeer{}
	configs := make(map[string]*speakerv1.BGPConfig, len(nodes))
	var problems []Problem
	byName := map[string]*v1alpha1.BGPPeer{}
	for _, p := range peers {
		byName[p.Name] = p
	}
	for _, n := range nodes {
		cfg, probs := BGPConfigFor(n, peers, c.secret)
		problems = append(problems, probs...)
		configs[n.Name] = cfg
		for _, bp := range cfg.GetPeers() {
			byNode[n.Name] = append(byNode[n.Name], byName[bp.GetName()])
		}
	}
	c.mu.Lock()
	changed := !maps.EqualFunc(byNode, c.byNode, func(a, b []*v1alpha1.BGPPeer) bool {
		return slices.EqualFunc(a, b, func(x, y *v1alpha1.BGPPeer) bool {
			return x.Name == y.Name && x.Generation == y.Generation && equality.Semantic.DeepEqual(x.Labels, y.Labels)
		})
	}) || !maps.EqualFunc(configs, c.configs, func(a, b *speakerv1.BGPConfig) bool { return proto.Equal(a, b) }) || !c.synced
	problems = uniqueProblems(problems)
	c.byNode, c.configs = byNode, configs
	first := !c.synced
	newProblems := !slices.Equal(problems, c.problems)
	c.problems = problems
	fns := slices.Clone(c.onChange)
	c.mu.Unlock()
	if newProblems {
		for _, p := range problems {
			kv := []any{"bgppeer", p.Peer, "node", p.Node, "reason", p.Reason, "problem", p.Message}
			if p.Detail != "" {
				kv = append(kv, "detail", p.Detail)
			}
			c.log.Info("BGPPeer cannot be used", kv...)
		}
	}
	if changed {
		for _, fn := range fns {
			fn()
		}
	}
	if first {
		c.mu.Lock()
		c.synced = true
		c.mu.Unlock()
	}
	c.touchAll()
}

// uniqueProblems sorts problems and drops repeats (a problem of a peer
// itself is found once per node it selects).
func uniqueProblems(ps []Problem) []Problem {
	slices.SortFunc(ps, func(a, b Problem) int {
		return strings.Compare(a.Peer+"\x00"+a.Node+"\x00"+string(a.Reason)+"\x00"+a.Message,
			b.Peer+"\x00"+b.Node+"\x00"+string(b.Reason)+"\x00"+b.Message)
	})
	return slices.Compact(ps)
}
