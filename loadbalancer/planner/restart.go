package planner

import (
	v1 "k8s.io/api/core/v1"
)

// A rolling restart of the speakers must not move every VIP twice. A
// speaker with the "restart" capability ends its stream with
// ReasonRestarting and withdraws nothing; the speakers package keeps
// State.Restarting true while its host is up (it refuses connections to
// the speaker's port) and the restart grace lasts. Meanwhile the planner
// keeps the VIPs the node announces on it, as long as the Node itself is
// Ready, schedulable and not being deleted: the node goes on delivering
// their traffic, and the new speaker process takes them over. The node
// gets no VIP it does not have (SpeakerRestarting makes it ineligible;
// chooseLocked keeps a restarting announcer). When Restarting ends
// without the speaker coming back, the node's speaker is lost and its
// VIPs move at once. A crash (no reason) is a loss, as before, and so is
// a shutdown of an older speaker (SpeakerStopped).

// restartVerdict is the verdict on a node whose speaker is restarting:
// SpeakerRestarting while its Node may keep its VIPs, SpeakerLost
// otherwise.
func restartVerdict(n *v1.Node) *verdict {
	switch {
	case !nodeReady(n):
		return &verdict{SpeakerLost, "speaker is restarting and its node is not Ready"}
	case cordoned(n) != nil:
		return &verdict{SpeakerLost, "speaker is restarting and its node is being drained: " + cordoned(n).msg}
	case n.DeletionTimestamp != nil:
		return &verdict{SpeakerLost, "speaker is restarting and its node is being deleted"}
	}
	return &verdict{SpeakerRestarting, "speaker is restarting; the node keeps the VIPs it announces until the new speaker reports"}
}
