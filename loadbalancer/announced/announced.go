// Package announced encodes and decodes the message of a Service's
// ironlb.dev/Announced condition: the CCMs' record of where each of the
// Service's VIPs is announced, which a new leader places VIPs by and
// `kubectl ironlb status` shows.
//
// The message is one entry per VIP, joined by ", ":
//
//	192.0.2.200=node-a
//	198.51.100.7=bgp:node-a+node-b
//	192.0.2.9=node-a;bgp:node-a+node-b@shop/web
//	2001:db8::5=-
//
// An entry is an address in its canonical form, "=", where it is announced
// ("-" for nowhere; layer-2 nodes joined by "+"; "bgp:" and the nodes
// advertising it; both joined by ";") and, for a shared address, "@" and
// the sharing key it is held under. Node names are DNS subdomains, which
// hold none of the separators. A sharing key is written with every byte
// outside [A-Za-z0-9._/*-] as %XX (upper-case hex), so no key, whatever a
// tenant wrote into an annotation, can end an entry or start another:
// every sharing key IronLB accepts today is written as it is, and the
// format is the one earlier versions wrote, which Decode keeps reading.
//
// Decode is strict: an entry that does not follow the grammar (a
// non-canonical address, a bad node name, a bad escape, an address written
// twice) is rejected, and so is every entry for an address the Service
// does not hold, so that a Service's record can place only its own VIPs.
package announced

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// MaxKeyLen bounds a sharing key (decoded) in a record: a scoped key is a
// namespace (at most 63 bytes), "/" and a key (at most 63).
const MaxKeyLen = 253

// Entry is what the record says of one VIP.
type Entry struct {
	// Address is the VIP.
	Address netip.Addr
	// Layer2 are the nodes answering ARP/NDP for it.
	Layer2 []string
	// BGP are the nodes advertising it over BGP.
	BGP []string
	// SharedAs is the sharing key it is held under, "" if not shared.
	SharedAs string
}

// Encode writes entries as a condition message. It fails on an invalid or
// zoned address, an address given twice, a node name that is not a DNS
// subdomain, or a sharing key longer than MaxKeyLen.
func Encode(entries []Entry) (string, error) {
	var b strings.Builder
	seen := make([]netip.Addr, 0, len(entries))
	for i, e := range entries {
		if !e.Address.IsValid() || e.Address.Zone() != "" {
			return "", fmt.Errorf("entry %d: %q is not a VIP", i, e.Address)
		}
		if slices.Contains(seen, e.Address) {
			return "", fmt.Errorf("entry %d: %s given twice", i, e.Address)
		}
		seen = append(seen, e.Address)
		for _, n := range slices.Concat(e.Layer2, e.BGP) {
			if err := checkNode(n); err != nil {
				return "", fmt.Errorf("entry %d (%s): %w", i, e.Address, err)
			}
		}
		if len(e.SharedAs) > MaxKeyLen {
			return "", fmt.Errorf("entry %d (%s): sharing key of %d bytes, at most %d", i, e.Address, len(e.SharedAs), MaxKeyLen)
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.Address.String())
		b.WriteByte('=')
		b.WriteString(owners(e))
		if e.SharedAs != "" {
			b.WriteByte('@')
			b.WriteString(escapeKey(e.SharedAs))
		}
	}
	return b.String(), nil
}

// owners is how an entry names where its VIP is.
func owners(e Entry) string {
	var parts []string
	if len(e.Layer2) > 0 {
		parts = append(parts, strings.Join(e.Layer2, "+"))
	}
	if len(e.BGP) > 0 {
		parts = append(parts, "bgp:"+strings.Join(e.BGP, "+"))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ";")
}

// Decode reads a condition message and returns the entries for the
// addresses in own (the addresses the Service's status holds), in the
// order written. The error, when not nil, tells how many entries were
// rejected and why the first was; the entries that parsed are returned
// with it.
func Decode(msg string, own []netip.Addr) ([]Entry, error) {
	if strings.TrimSpace(msg) == "" {
		return nil, nil
	}
	var (
		out      []Entry
		rejected int
		first    error
		counts   = map[netip.Addr]int{}
	)
	reject := func(err error) {
		rejected++
		if first == nil {
			first = err
		}
	}
	for part := range strings.SplitSeq(msg, ",") {
		e, err := decodeEntry(strings.TrimSpace(part))
		if err != nil {
			reject(err)
			continue
		}
		counts[e.Address]++
		if !slices.Contains(own, e.Address) {
			reject(fmt.Errorf("%s is not an address of this Service", e.Address))
			continue
		}
		out = append(out, e)
	}
	// An address written twice is ambiguous: neither entry counts.
	out = slices.DeleteFunc(out, func(e Entry) bool {
		if counts[e.Address] > 1 {
			reject(fmt.Errorf("%s is written more than once", e.Address))
			return true
		}
		return false
	})
	if rejected > 0 {
		return out, fmt.Errorf("%d entries rejected, the first: %w", rejected, first)
	}
	return out, nil
}

// decodeEntry parses one entry.
func decodeEntry(s string) (Entry, error) {
	addr, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Entry{}, fmt.Errorf("%s: no \"=\"", quote(s))
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" || a.String() != addr {
		return Entry{}, fmt.Errorf("%s is not an address in canonical form", quote(addr))
	}
	e := Entry{Address: a}
	nodes, key, shared := strings.Cut(rest, "@")
	if shared {
		if e.SharedAs, err = unescapeKey(key); err != nil {
			return Entry{}, fmt.Errorf("%s: %w", a, err)
		}
	}
	switch {
	case nodes == "-":
	case strings.Contains(nodes, ";"):
		l2, bgp, _ := strings.Cut(nodes, ";")
		bgp, ok := strings.CutPrefix(bgp, "bgp:")
		if !ok {
			return Entry{}, fmt.Errorf("%s: %s is not \"nodes;bgp:nodes\"", a, quote(nodes))
		}
		if e.Layer2, err = nodeList(l2); err == nil {
			e.BGP, err = nodeList(bgp)
		}
	case strings.HasPrefix(nodes, "bgp:"):
		e.BGP, err = nodeList(nodes[len("bgp:"):])
	default:
		e.Layer2, err = nodeList(nodes)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%s: %w", a, err)
	}
	return e, nil
}

// nodeList parses node names joined by "+".
func nodeList(s string) ([]string, error) {
	out := strings.Split(s, "+")
	for _, n := range out {
		if err := checkNode(n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkNode fails unless n can be a Node's name.
func checkNode(n string) error {
	if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
		return fmt.Errorf("%s is not a node name", quote(n))
	}
	return nil
}

// plainKeyByte reports whether c is written as it is in a sharing key.
func plainKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '/' || c == '*'
}

const upperHex = "0123456789ABCDEF"

// escapeKey writes every byte of k outside the plain set as %XX.
func escapeKey(k string) string {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		c := k[i]
		if plainKeyByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xf])
	}
	return b.String()
}

var errKey = errors.New("bad sharing key")

// unescapeKey reverses escapeKey, accepting only what escapeKey writes: a
// non-empty key of plain bytes and %XX (upper-case) of bytes that are not
// plain, at most MaxKeyLen bytes once decoded.
func unescapeKey(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty", errKey)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case plainKeyByte(c):
			b.WriteByte(c)
		case c == '%' && i+2 < len(s) && isUpperHex(s[i+1]) && isUpperHex(s[i+2]):
			v := unhex(s[i+1])<<4 | unhex(s[i+2])
			if plainKeyByte(v) {
				return "", fmt.Errorf("%w: %s escapes %q, which is written as it is", errKey, s[i:i+3], v)
			}
			b.WriteByte(v)
			i += 2
		default:
			return "", fmt.Errorf("%w: %s at byte %d", errKey, strconv.Quote(s[i:i+1]), i)
		}
		if b.Len() > MaxKeyLen {
			return "", fmt.Errorf("%w: longer than %d bytes", errKey, MaxKeyLen)
		}
	}
	return b.String(), nil
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

// quote quotes untrusted text for an error, at most 64 bytes of it.
func quote(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "…"
	}
	return strconv.Quote(s)
}
