package planner

import (
	"maps"
	"slices"
	"strings"
)

// Event reasons for announcements.
const (
	ReasonAnnounced    = "VIPAnnounced"
	ReasonMoved        = "VIPMoved"
	ReasonAdvertised   = "VIPAdvertised"
	ReasonNoAnnouncer  = "NoAnnouncingNode"
	ReasonOutsidePools = "AddressOutsidePools"
)

// event records an Event on every Service holding v.
func (p *Planner) event(v *vip, typ, reason, msg string) {
	if p.opts.Recorder == nil {
		return
	}
	for _, svc := range v.services {
		if svc != nil {
			p.opts.Recorder.Event(svc, typ, reason, msg)
		}
	}
}

// summarize joins per-node reasons into one line, sorted by node.
func summarize(why map[string]verdict) string {
	if len(why) == 0 {
		return "the cluster has no nodes"
	}
	parts := make([]string, 0, len(why))
	for _, n := range slices.Sorted(maps.Keys(why)) {
		parts = append(parts, n+": "+why[n].msg)
	}
	return strings.Join(parts, "; ")
}
