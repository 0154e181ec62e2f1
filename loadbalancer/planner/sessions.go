package planner

// BGP peer configuration reaches the speakers by one path, the planner's:
// the peers' controller (loadbalancer/bgppeers) computes each node's BGP
// set-up and tells the planner when it changed; the planner gives every
// node's speaker its set-up (speakers.Manager.SetBGP), nodes that hold no
// VIP included, and then re-plans what each node advertises to those
// peers (bgp.go).

// peersChanged is called by Peers after a node's peers or set-up changed:
// the speakers get their set-ups before the advertisements that follow.
// It runs before Peers reports Synced for the first time, so no speaker
// gets a snapshot without its sessions.
func (p *Planner) peersChanged() {
	p.configureSessions()
	p.enqueue(allKey)
}

// configureSessions gives every node's speaker its BGP set-up. The
// speakers' manager sends a speaker its set-up only when it changed.
func (p *Planner) configureSessions() {
	for node, cfg := range p.opts.Peers.BGPConfigs() {
		p.speakers.SetBGP(node, cfg)
	}
}
