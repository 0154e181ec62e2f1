package bfd

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPacketRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    packet
	}{
		{"down without your discriminator", packet{Diag: DiagDetectionExpired, State: Down, DetectMult: 3, MyDiscr: 0xdeadbeef,
			DesiredMinTx: time.Second, RequiredMinRx: 300 * time.Millisecond}},
		{"up with poll", packet{State: Up, Poll: true, DetectMult: 5, MyDiscr: 1, YourDiscr: 2,
			DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 10 * time.Millisecond, RequiredMinEchoRx: 0}},
		{"init with final, C and D bits", packet{State: Init, Final: true, ControlPlaneIndependent: true, Demand: true,
			DetectMult: 1, MyDiscr: 7, YourDiscr: 8, DesiredMinTx: maxInterval, RequiredMinRx: time.Microsecond,
			RequiredMinEchoRx: time.Millisecond}},
		{"admin down", packet{Diag: DiagAdminDown, State: AdminDown, DetectMult: 255, MyDiscr: 0xffffffff,
			DesiredMinTx: 2 * time.Second, RequiredMinRx: 2 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := appendPacket(nil, &tc.p)
			if len(b) != headerLen {
				t.Fatalf("encoded %d bytes, want %d", len(b), headerLen)
			}
			got, err := parsePacket(b)
			if err != nil {
				t.Fatalf("parsePacket: %v", err)
			}
			want := tc.p
			want.Version, want.Length = version, headerLen
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPacketWireLayout(t *testing.T) {
	p := packet{Diag: DiagNeighborDown, State: Up, Poll: true, DetectMult: 3, MyDiscr: 0x01020304, YourDiscr: 0x05060708,
		DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: time.Second}
	want := []byte{
		0x23, 0xe0, 3, 24, // version 1, diag 3; state Up, P
		1, 2, 3, 4, 5, 6, 7, 8,
		0x00, 0x01, 0x86, 0xa0, // 100000 µs
		0x00, 0x0f, 0x42, 0x40, // 1000000 µs
		0, 0, 0, 0,
	}
	if diff := cmp.Diff(want, appendPacket(nil, &p)); diff != "" {
		t.Errorf("wire bytes (-want +got):\n%s", diff)
	}
}

func TestParsePacketValidation(t *testing.T) {
	valid := func() []byte {
		return appendPacket(nil, &packet{State: Up, DetectMult: 3, MyDiscr: 1, YourDiscr: 2,
			DesiredMinTx: time.Second, RequiredMinRx: time.Second})
	}
	for _, tc := range []struct {
		name   string
		modify func([]byte) []byte
		want   error
	}{
		{"valid", func(b []byte) []byte { return b }, nil},
		{"short", func(b []byte) []byte { return b[:23] }, errShort},
		{"version 0", func(b []byte) []byte { b[0] &^= 0xe0; return b }, errVersion},
		{"version 2", func(b []byte) []byte { b[0] = 2<<5 | b[0]&0x1f; return b }, errVersion},
		{"length below 24", func(b []byte) []byte { b[3] = 23; return b }, errLength},
		{"length beyond payload", func(b []byte) []byte { b[3] = 25; return b }, errLength},
		{"length shorter than payload is fine", func(b []byte) []byte { return append(b, 0, 0) }, nil},
		{"auth bit needs an auth section", func(b []byte) []byte { b[1] |= bitAuth; return b }, errLength},
		{"auth bit with section parses (discarded later)", func(b []byte) []byte {
			b[1] |= bitAuth
			b[3] = 26
			return append(b, 1, 2)
		}, nil},
		{"detect mult 0", func(b []byte) []byte { b[2] = 0; return b }, errDetectMult},
		{"multipoint", func(b []byte) []byte { b[1] |= bitMultipont; return b }, errMultipoint},
		{"my discriminator 0", func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b }, errMyDiscr},
		{"your discriminator 0 in Up", func(b []byte) []byte { copy(b[8:12], []byte{0, 0, 0, 0}); return b }, errYourDiscr},
		{"your discriminator 0 in Init", func(b []byte) []byte {
			copy(b[8:12], []byte{0, 0, 0, 0})
			b[1] = byte(Init) << 6
			return b
		}, errYourDiscr},
		{"your discriminator 0 in Down", func(b []byte) []byte {
			copy(b[8:12], []byte{0, 0, 0, 0})
			b[1] = byte(Down) << 6
			return b
		}, nil},
		{"your discriminator 0 in AdminDown", func(b []byte) []byte {
			copy(b[8:12], []byte{0, 0, 0, 0})
			b[1] = byte(AdminDown) << 6
			return b
		}, nil},
		{"version checked before length", func(b []byte) []byte { b[0] = 0; b[3] = 0; return b }, errVersion},
		{"detect mult checked before multipoint", func(b []byte) []byte { b[2] = 0; b[1] |= bitMultipont; return b }, errDetectMult},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePacket(tc.modify(valid()))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("parsePacket error = %v, want %v", err, tc.want)
			}
			if err == nil && p == nil {
				t.Fatal("parsePacket returned no packet and no error")
			}
		})
	}
}

func TestStrings(t *testing.T) {
	got := []string{AdminDown.String(), Down.String(), Init.String(), Up.String(), State(9).String(),
		DiagNone.String(), DiagDetectionExpired.String(), DiagNeighborDown.String(), DiagAdminDown.String(), Diag(31).String()}
	want := []string{"AdminDown", "Down", "Init", "Up", "State(9)",
		"none", "control detection time expired", "neighbor signaled session down", "administratively down", "diagnostic 31"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
