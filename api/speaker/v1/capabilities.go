package speakerv1

import "slices"

// Capabilities a speaker lists in Report.capabilities. The CCM sends a
// speaker only what its capabilities allow, and a node whose speaker lacks
// a capability a VIP needs does not announce that VIP.
const (
	// CapabilityLayer2 answers ARP and NDP for announced VIPs.
	CapabilityLayer2 = "layer2"
	// CapabilityFencing honours Snapshot.term and Update.term: the speaker
	// refuses instructions of a leader older than one it followed.
	CapabilityFencing = "fencing"
	// CapabilityBGP advertises VIPs to BGP peers (Snapshot.bgp,
	// Announcement.bgp) and reports its sessions.
	CapabilityBGP = "bgp"
	// CapabilityBGPMED sends BGPAdvertisement.med with its routes.
	CapabilityBGPMED = "bgp-med"
	// CapabilityReattest answers an Attest with its current enrollment
	// token, so that its node certificate is renewed on the open stream.
	CapabilityReattest = "reattest"
	// CapabilityTrustBundle replaces (never adds to) the CA bundle the CCM
	// sent before, trusts only CAs also in its mounted bundle, and takes a
	// Certificate without certificate_pem as a new bundle alone.
	CapabilityTrustBundle = "trust-bundle"
	// CapabilityProbe honours Announcement.probe (probes the LAN before
	// answering for a new VIP, reports CONFLICT) and reports other hosts'
	// claims of the VIPs it announces (VIPStatus.claimed_by).
	CapabilityProbe = "probe"
	// CapabilityYield gives a layer-2 VIP up when another host claims it
	// while the speaker is cut off from the CCM (Snapshot.heartbeat_interval_ms).
	CapabilityYield = "yield"
	// CapabilityDataPlane reports the node's data-plane health
	// (Report.data_plane).
	CapabilityDataPlane = "data-plane"
	// CapabilityRestart ends its streams with ReasonRestarting when it is
	// stopped (SIGTERM) without withdrawing anything: its node goes on
	// delivering its VIPs' traffic while a new process takes over.
	CapabilityRestart = "restart"
	// CapabilityHeartbeatInterval takes Heartbeat.interval_ms as the
	// stream's heartbeat interval from then on.
	CapabilityHeartbeatInterval = "heartbeat-interval"
	// CapabilityDHCP runs DHCPExchanges and answers them in Report.dhcp.
	CapabilityDHCP = "dhcp"
)

// LegacyCapabilities are those of a speaker that lists none: it predates
// capabilities and can only announce over layer 2.
var LegacyCapabilities = []string{CapabilityLayer2}

// CapabilitiesOf returns what the speaker that sent r can do.
func CapabilitiesOf(r *Report) []string {
	if len(r.GetCapabilities()) == 0 {
		return slices.Clone(LegacyCapabilities)
	}
	return slices.Clone(r.GetCapabilities())
}
