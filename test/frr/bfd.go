package frr

import "context"

// BFDPeer is one BFD session as FRR's bfdd sees it ("show bfd peers
// json"); intervals in milliseconds.
type BFDPeer struct {
	Multihop         bool   `json:"multihop"`
	Peer             string `json:"peer"`
	Local            string `json:"local"`
	ID               uint32 `json:"id"`
	RemoteID         uint32 `json:"remote-id"`
	Status           string `json:"status"` // up, down, init, shutdown
	Diagnostic       string `json:"diagnostic"`
	RemoteDiagnostic string `json:"remote-diagnostic"`
	ReceiveInterval  int    `json:"receive-interval"`
	TransmitInterval int    `json:"transmit-interval"`
	DetectMultiplier int    `json:"detect-multiplier"`
	RemoteReceive    int    `json:"remote-receive-interval"`
	RemoteTransmit   int    `json:"remote-transmit-interval"`
	RemoteMultiplier int    `json:"remote-detect-multiplier"`
	Uptime           int    `json:"uptime"`
	Downtime         int    `json:"downtime"`
}

// BFDPeerList returns bfdd's sessions.
func (r *Router) BFDPeerList(ctx context.Context) ([]BFDPeer, error) {
	var l []BFDPeer
	if err := r.JSON(ctx, "show bfd peers json", &l); err != nil {
		return nil, err
	}
	return l, nil
}

// BFDPeers returns bfdd's sessions by peer address (one per peer).
func (r *Router) BFDPeers(ctx context.Context) (map[string]BFDPeer, error) {
	l, err := r.BFDPeerList(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string]BFDPeer{}
	for _, p := range l {
		m[p.Peer] = p
	}
	return m, nil
}
