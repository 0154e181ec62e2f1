package cpvip

// Status is what a control-plane speaker serves as JSON on
// http://<node IP>:7476/status: its view of the control-plane VIP. It holds
// no secret. kubectl ironlb status reads it from every control-plane node
// through the API server's node proxy.
type Status struct {
	// VIP is the control-plane VIP.
	VIP string `json:"vip"`
	// Mode is "l2" or "bgp".
	Mode string `json:"mode"`
	// Node and NodeIP are this speaker's node.
	Node   string `json:"node"`
	NodeIP string `json:"nodeIP"`
	// APIServerReady says whether the local kube-apiserver's /readyz
	// answered ok at the last checks; APIServerError is the last failure.
	APIServerReady bool   `json:"apiserverReady"`
	APIServerError string `json:"apiserverError,omitempty"`
	// Serving says whether this node serves the VIP now: it holds it
	// (layer 2) or advertises it (BGP).
	Serving bool `json:"serving"`
	// Holder is the node this speaker believes holds the VIP (layer 2;
	// empty when none), and Epoch the holder's term.
	Holder string `json:"holder,omitempty"`
	Epoch  uint64 `json:"epoch,omitempty"`
	// Peers are the other control-plane speakers heard recently (layer 2).
	Peers []PeerStatus `json:"peers,omitempty"`
	// BGP are this node's BGP sessions (BGP mode).
	BGP []BGPSessionStatus `json:"bgp,omitempty"`
}

// PeerStatus is one other control-plane speaker as last heard.
type PeerStatus struct {
	Node           string `json:"node"`
	Address        string `json:"address"`
	APIServerReady bool   `json:"apiserverReady"`
	Holding        bool   `json:"holding"`
	Epoch          uint64 `json:"epoch,omitempty"`
	// LastHeardMillis is how long ago its last valid message arrived.
	LastHeardMillis int64 `json:"lastHeardMillis"`
}

// BGPSessionStatus is one BGP session of a control-plane speaker.
type BGPSessionStatus struct {
	Peer  string `json:"peer"`
	State string `json:"state"`
	// BFD is the BFD session's state ("up", "down", "off").
	BFD string `json:"bfd,omitempty"`
	// Advertised says whether the VIP's route is advertised to this peer.
	Advertised bool `json:"advertised"`
}
