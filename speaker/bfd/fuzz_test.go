package bfd

import (
	"bytes"
	"testing"
	"time"
)

// FuzzParsePacket: no datagram makes the parser panic; a packet it
// accepts obeys the checks of RFC 5880 §6.8.6 and, without
// authentication, encodes back to the same 24 bytes.
func FuzzParsePacket(f *testing.F) {
	f.Add(appendPacket(nil, &packet{State: Up, DetectMult: 3, MyDiscr: 1, YourDiscr: 2, DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond}))
	f.Add(appendPacket(nil, &packet{State: Down, Diag: DiagAdminDown, Poll: true, DetectMult: 1, MyDiscr: 7}))
	f.Add([]byte{0x20, 0x44, 0x03, 0x18})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePacket(b)
		if err != nil {
			return
		}
		if p.Version != version || p.DetectMult == 0 || p.Multipoint || p.MyDiscr == 0 || int(p.Length) > len(b) || p.Length < headerLen ||
			(p.YourDiscr == 0 && p.State != Down && p.State != AdminDown) {
			t.Fatalf("accepted %x as %+v", b, p)
		}
		if p.AuthPresent || p.Length != headerLen {
			return
		}
		if got := appendPacket(nil, p); !bytes.Equal(got, b[:headerLen]) {
			t.Fatalf("%x parsed to %+v, which encodes to %x", b[:headerLen], p, got)
		}
	})
}
