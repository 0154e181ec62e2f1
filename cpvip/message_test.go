package cpvip

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	testVIP = netip.MustParseAddr("192.0.2.250")
	t0      = time.Unix(1_700_000_000, 0)
)

func mustKey(t testing.TB, secret string) Key {
	t.Helper()
	k, err := DeriveKey([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testMessage() Message {
	return Message{VIP: testVIP, Node: "cp-1.example", NodeIP: netip.MustParseAddr("192.0.2.11"), Ready: true, Holding: true, Epoch: 42, Time: t0}
}

func marshal(t testing.TB, m Message, k Key) []byte {
	t.Helper()
	b, err := m.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestMessageRoundTrip(t *testing.T) {
	k := mustKey(t, strings.Repeat("k", 32))
	for _, m := range []Message{
		testMessage(),
		{VIP: netip.MustParseAddr("2001:db8::250"), Node: "a", NodeIP: netip.MustParseAddr("2001:db8::11"), Epoch: 0, Time: t0},
		{VIP: testVIP, Node: strings.Repeat("a", 253), NodeIP: netip.MustParseAddr("2001:db8::11"), Ready: true, Time: t0.Add(time.Nanosecond)},
	} {
		b := marshal(t, m, k)
		if len(b) > MaxMessageSize {
			t.Errorf("%d bytes, over %d", len(b), MaxMessageSize)
		}
		got, err := Parse(b, []Key{k})
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if diff := cmp.Diff(m, got, addrCmp); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestMarshalRefuses(t *testing.T) {
	k := mustKey(t, strings.Repeat("k", 32))
	for name, mutate := range map[string]func(*Message){
		"bad node name":   func(m *Message) { m.Node = "Not_A_Name" },
		"empty node name": func(m *Message) { m.Node = "" },
		"long node name":  func(m *Message) { m.Node = strings.Repeat("a", 254) },
		"no VIP":          func(m *Message) { m.VIP = netip.Addr{} },
		"multicast IP":    func(m *Message) { m.NodeIP = netip.MustParseAddr("224.0.0.1") },
	} {
		t.Run(name, func(t *testing.T) {
			m := testMessage()
			mutate(&m)
			if _, err := m.Marshal(k); err == nil {
				t.Error("Marshal accepted it")
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	k := mustKey(t, strings.Repeat("k", 32))
	other := mustKey(t, strings.Repeat("o", 32))
	good := marshal(t, testMessage(), k)
	// resign recomputes the HMAC after a change to the body.
	resign := func(b []byte) []byte {
		body := b[:len(b)-macSize]
		return append(append([]byte(nil), body...), k.sign(body)...)
	}
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		b    []byte
		keys []Key
		want Reason
	}{
		{"empty", nil, []Key{k}, ReasonMalformed},
		{"oversized", make([]byte, MaxMessageSize+1), []Key{k}, ReasonSize},
		{"truncated by one", good[:len(good)-1], []Key{k}, ReasonMalformed},
		{"truncated header", good[:10], []Key{k}, ReasonMalformed},
		{"trailing byte", append(append([]byte(nil), good...), 0), []Key{k}, ReasonMalformed},
		{"bad magic", edit(func(b []byte) []byte { b[0] = 'X'; return resign(b) }), []Key{k}, ReasonMalformed},
		{"bad version", edit(func(b []byte) []byte { b[4] = 2; return resign(b) }), []Key{k}, ReasonMalformed},
		{"unknown flag", edit(func(b []byte) []byte { b[5] |= 0x80; return resign(b) }), []Key{k}, ReasonMalformed},
		{"zero timestamp", edit(func(b []byte) []byte { copy(b[15:23], make([]byte, 8)); return resign(b) }), []Key{k}, ReasonMalformed},
		{"bad address length", edit(func(b []byte) []byte { b[23] = 5; return resign(b) }), []Key{k}, ReasonMalformed},
		{"uppercase node name", edit(func(b []byte) []byte { b[len(b)-macSize-1] = 'X'; return resign(b) }), []Key{k}, ReasonMalformed},
		{"flipped body bit", edit(func(b []byte) []byte { b[6] ^= 1; return b }), []Key{k}, ReasonSignature},
		{"flipped HMAC bit", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), []Key{k}, ReasonSignature},
		{"wrong key", good, []Key{other}, ReasonSignature},
		{"no key", good, nil, ReasonNoKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.b, tt.keys)
			if got := ReasonOf(err); got != tt.want {
				t.Errorf("reason %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseVerifiesWithAnyKey(t *testing.T) {
	oldK, newK := mustKey(t, strings.Repeat("o", 32)), mustKey(t, strings.Repeat("n", 32))
	for _, signer := range []Key{oldK, newK} {
		if _, err := Parse(marshal(t, testMessage(), signer), []Key{newK, oldK}); err != nil {
			t.Errorf("not verified by a key list holding its key: %v", err)
		}
	}
}

func TestVerifier(t *testing.T) {
	k := mustKey(t, strings.Repeat("k", 32))
	at := func(d time.Duration, mutate ...func(*Message)) []byte {
		m := testMessage()
		m.Time = t0.Add(d)
		for _, f := range mutate {
			f(&m)
		}
		return marshal(t, m, k)
	}
	v := NewVerifier(testVIP)
	steps := []struct {
		name string
		b    []byte
		want Reason // "" accepted
	}{
		{"first", at(0), ""},
		{"replayed", at(0), ReasonReplay},
		{"older", at(-time.Millisecond), ReasonReplay},
		{"newer", at(time.Millisecond), ""},
		{"other VIP", at(2*time.Millisecond, func(m *Message) { m.VIP = netip.MustParseAddr("192.0.2.251") }), ReasonVIP},
		{"too far ahead", at(MaxFutureSkew + time.Second), ReasonClock},
		{"too old", at(-MaxFutureSkew-time.Second, func(m *Message) { m.Node = "other" }), ReasonClock},
		{"another node, same time", at(0, func(m *Message) { m.Node = "other" }), ""},
	}
	for _, s := range steps {
		_, err := v.Verify(s.b, []Key{k}, t0)
		if got := ReasonOf(err); got != s.want {
			t.Errorf("%s: reason %q (%v), want %q", s.name, got, err, s.want)
		}
	}
}

func TestVerifierBoundsPeers(t *testing.T) {
	k := mustKey(t, strings.Repeat("k", 32))
	v := NewVerifier(testVIP)
	send := func(i int, now time.Time) error {
		m := testMessage()
		m.Node = "n" + strings.Repeat("x", i%200) + string(rune('a'+i/200))
		m.Time = now
		_, err := v.Verify(marshal(t, m, k), []Key{k}, now)
		return err
	}
	for i := range MaxPeers {
		if err := send(i, t0); err != nil {
			t.Fatal(err)
		}
	}
	if got := ReasonOf(send(MaxPeers, t0)); got != ReasonPeers {
		t.Errorf("sender %d: reason %q, want %q", MaxPeers+1, got, ReasonPeers)
	}
	// Once the others are stale, a new sender is accepted.
	if err := send(MaxPeers, t0.Add(MaxFutureSkew+time.Second)); err != nil {
		t.Errorf("new sender after the others went stale: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	k := mustKey(f, strings.Repeat("k", 32))
	good := marshal(f, testMessage(), k)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("ILCP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b, []Key{k})
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Whatever parses re-encodes to the same bytes.
		again, err := m.Marshal(k)
		if err != nil {
			t.Fatalf("parsed %+v does not marshal: %v", m, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoded differs:\n%x\n%x", b, again)
		}
	})
}
