package status_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ironlb/ironlb/status"
)

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"default/web", "default/web"},
		{"connection to 192.0.2.254 refused", "connection to 192.0.2.254 refused"},
		{"", ""},
		{"naïve, 日本", "naïve, 日本"},
		{`say "hi"`, `say "hi"`},
		{"\x1b[2J", `"\x1b[2J"`},
		{"web\x1b]8;;http://example.com\x07x", `"web\x1b]8;;http://example.com\ax"`},
		{"a\tb", `"a\tb"`},
		{"a\nb", `"a\nb"`},
		{"a\rb", `"a\rb"`},
		{"\u009b2J", `"\u009b2J"`}, // C1 CSI
		{"abc\u202edef", `"abc\u202edef"`},
		{"\xff", `"\xff"`},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			got := status.Escape(tc.in)
			if got != tc.want {
				t.Errorf("Escape(%q) = %s, want %s", tc.in, got, tc.want)
			}
			if again := status.Escape(got); again != got {
				t.Errorf("Escape(Escape(%q)) = %s, want %s", tc.in, again, got)
			}
		})
	}
}

// TestTableEscapesUntrustedText: text from the API (a Service's name, a
// pool's condition message, a sharing key, node and pod names, a
// session's last error, the metrics error) reaches the terminal with its
// control characters shown, never acting on it or breaking the columns.
func TestTableEscapesUntrustedText(t *testing.T) {
	const clear = "\x1b[2J"
	st := &status.Status{
		Pools: []status.Pool{{Name: "lan", Mode: "layer2", Addresses: []string{"192.0.2.0/28"}, Ready: "False",
			ReadyMessage: "bad" + clear, Conflicting: "overlaps\n" + clear}},
		VIPs: []status.VIP{{Service: "default/web" + clear, Address: "192.0.2.1", Pool: "lan", Layer2: []string{"node-a" + clear},
			BGP: []string{"node-b\t"}, SharingKey: "x, 192.0.2.50=node-evil" + clear, State: "Announced" + clear}},
		Speakers: []status.Speaker{{Node: "node-a" + clear, Pod: "p\x07", Version: "v1" + clear}},
		Sessions: []status.Session{{Peer: "tor", PeerAddress: "192.0.2.254", Node: "node-a", State: "Active",
			LastError: "refused\r\x1b[1A\x1b[2K" + clear}},
		Metrics: &status.Metrics{URL: "https://ccm/metrics", Error: "read: " + clear},
	}
	var out bytes.Buffer
	if err := st.WriteTable(&out, time.Now()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for i, r := range got {
		if r == utf8.RuneError || r < 0x20 && r != '\n' || r >= 0x7f && r < 0xa0 {
			t.Fatalf("the table holds %q at byte %d:\n%s", r, i, got)
		}
	}
	for _, want := range []string{
		`default/web\x1b[2J`, `False (`, `"bad\x1b[2J"`, `"overlaps\n\x1b[2J"`, `"node-a\x1b[2J"`, `"node-b\t"`,
		`(shared: "x, 192.0.2.50=node-evil\x1b[2J")`, `"Announced\x1b[2J"`, `"p\a"`, `"v1\x1b[2J"`,
		`"refused\r\x1b[1A\x1b[2K\x1b[2J"`, `could not be read: "read: \x1b[2J"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the table does not show %s:\n%s", want, got)
		}
	}
	// Each table keeps its columns: every row of the VIPS table has the
	// header's number of columns.
	lines := strings.Split(got, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "SERVICE ") {
			if row := lines[i+1]; len(strings.Fields(strings.ReplaceAll(row, " (shared: ", "_(shared:_"))) < 6 {
				t.Errorf("VIPS row lost columns: %q", row)
			}
		}
	}
}

// FuzzEscape: what Escape returns is valid UTF-8 of printable characters,
// Escape leaves it as it is, and a quoted result unquotes to the input.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"default/web", "\x1b[2J", "a\tb", "\xff", "abc\u202edef", `"x"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := status.Escape(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Escape(%q) = %q, not UTF-8", s, got)
		}
		for _, r := range got {
			if !strconv.IsPrint(r) {
				t.Fatalf("Escape(%q) = %q holds %q", s, got, r)
			}
		}
		if again := status.Escape(got); again != got {
			t.Fatalf("Escape(%q) = %q, Escape of that %q", s, got, again)
		}
		if got != s {
			if back, err := strconv.Unquote(got); err != nil || back != s {
				t.Fatalf("Escape(%q) = %s unquotes to %q (%v)", s, got, back, err)
			}
		}
	})
}
