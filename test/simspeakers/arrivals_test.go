package simspeakers

import (
	"testing"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

func snapshot(addrs ...string) *speakerv1.Instruction {
	s := &speakerv1.Snapshot{}
	for _, a := range addrs {
		s.Announcements = append(s.Announcements, &speakerv1.Announcement{Address: a})
	}
	return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: s}}
}

func update(announce []string, withdraw ...string) *speakerv1.Instruction {
	u := &speakerv1.Update{Withdraw: withdraw}
	for _, a := range announce {
		u.Announce = append(u.Announce, &speakerv1.Announcement{Address: a})
	}
	return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: u}}
}

func TestArrivals(t *testing.T) {
	a := newArrivals()
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	a.record(snapshot("192.0.2.1", "192.0.2.2"), at(0))
	a.record(update([]string{"192.0.2.3"}, "192.0.2.1"), at(1))
	a.record(snapshot("192.0.2.2", "192.0.2.3", "192.0.2.4"), at(2)) // a re-snapshot: only .4 is new
	want := map[string]Arrival{
		"192.0.2.1": {At: at(1), Added: false, Kind: "update"},
		"192.0.2.2": {At: at(0), Added: true, Kind: "snapshot"},
		"192.0.2.3": {At: at(1), Added: true, Kind: "update"},
		"192.0.2.4": {At: at(2), Added: true, Kind: "snapshot"},
	}
	for addr, w := range want {
		if got, ok := a.get(addr); !ok || got != w {
			t.Errorf("%s: %+v, %v; want %+v", addr, got, ok, w)
		}
	}
	a.record(snapshot("192.0.2.4"), at(3))
	for addr, w := range map[string]Arrival{"192.0.2.2": {At: at(3), Kind: "snapshot"}, "192.0.2.3": {At: at(3), Kind: "snapshot"}, "192.0.2.4": {At: at(2), Added: true, Kind: "snapshot"}} {
		if got, _ := a.get(addr); got != w {
			t.Errorf("after the second snapshot, %s: %+v; want %+v", addr, got, w)
		}
	}
	if n := len(a.all()); n != 4 {
		t.Errorf("%d records, want 4 (one per address)", n)
	}
	if _, ok := a.get("198.51.100.9"); ok {
		t.Error("an address never instructed has an arrival")
	}
}
