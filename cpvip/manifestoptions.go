package cpvip

import (
	"fmt"
	"net/netip"
	"path"

	"github.com/google/go-containerregistry/pkg/name"
)

// Bounds on ManifestOptions: more key files than a rotation needs, or more
// BGP peers than a rack has routers, is a mistake.
const (
	maxKeyFiles = 4
	maxBGPPeers = 8
	maxPathLen  = 1024
)

// OptionError is a ManifestOptions field StaticPod rejects: Option names
// the command-line flag it comes from.
type OptionError struct {
	Option string
	Value  string
	Reason string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("--%s %q: %s", e.Option, e.Value, e.Reason)
}

// validOptions are ManifestOptions checked, parsed and with defaults.
type validOptions struct {
	vip             netip.Addr
	mode            string
	ifc             string
	keyFiles        []string
	image           string
	bgpPeers        []netip.Addr
	bgpPeerASN      uint32
	bgpASN          uint32
	bgpPasswordFile string
}

func (o ManifestOptions) validate() (validOptions, error) {
	var v validOptions
	var err error
	if v.vip, err = parseVIP(o.VIP); err != nil {
		return v, err
	}
	switch o.Mode {
	case "", ModeL2:
		v.mode = ModeL2
	case ModeBGP:
		v.mode = ModeBGP
	default:
		return v, &OptionError{"mode", o.Mode, "must be l2 or bgp"}
	}
	if o.Interface != "" {
		if reason := interfaceNameProblem(o.Interface); reason != "" {
			return v, &OptionError{"interface", o.Interface, reason}
		}
		v.ifc = o.Interface
	}
	v.image = o.Image
	if v.image == "" {
		v.image = DefaultImage()
	}
	if _, err := name.ParseReference(v.image, name.StrictValidation); err != nil {
		return v, &OptionError{"image", v.image, "not an image reference with its registry and a tag or digest (" + err.Error() + ")"}
	}
	seen := map[string]bool{podAPIServerCAFile: true}
	if v.mode == ModeBGP {
		if len(o.KeyFiles) > 0 {
			// BGP mode has no election, and so no key.
			return v, &OptionError{"key-file", o.KeyFiles[0], "only for --mode l2"}
		}
		return v, o.validateBGP(&v, seen)
	}
	if len(o.BGPPeers) > 0 || o.BGPPeerASN != 0 || o.BGPASN != 0 || o.BGPPasswordFile != "" {
		return v, &OptionError{"mode", ModeL2, "BGP options need --mode bgp"}
	}
	return v, o.validateKeyFiles(&v, seen)
}

func (o ManifestOptions) validateKeyFiles(v *validOptions, seen map[string]bool) error {
	v.keyFiles = o.KeyFiles
	if len(v.keyFiles) == 0 {
		v.keyFiles = []string{podKeyFile}
	}
	if len(v.keyFiles) > maxKeyFiles {
		return &OptionError{"key-file", fmt.Sprint(v.keyFiles), fmt.Sprintf("more than %d files", maxKeyFiles)}
	}
	for _, f := range v.keyFiles {
		if reason := hostFileProblem(f); reason != "" {
			return &OptionError{"key-file", f, reason}
		}
		if seen[f] {
			return &OptionError{"key-file", f, "named twice, or it is the API server's CA"}
		}
		seen[f] = true
	}
	return nil
}

func (o ManifestOptions) validateBGP(v *validOptions, seen map[string]bool) error {
	if len(o.BGPPeers) == 0 {
		return &OptionError{"bgp-peer", "", "--mode bgp needs at least one peer"}
	}
	if len(o.BGPPeers) > maxBGPPeers {
		return &OptionError{"bgp-peer", fmt.Sprint(o.BGPPeers), fmt.Sprintf("more than %d peers", maxBGPPeers)}
	}
	for _, s := range o.BGPPeers {
		p, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			return &OptionError{"bgp-peer", s, "not an IP address"}
		case p.Zone() != "" || p.Is4In6():
			return &OptionError{"bgp-peer", s, "an address without a zone or IPv4-mapped form"}
		case !p.IsGlobalUnicast() && !p.IsPrivate():
			return &OptionError{"bgp-peer", s, "not a unicast address"}
		case p == v.vip:
			return &OptionError{"bgp-peer", s, "is the VIP"}
		}
		for _, q := range v.bgpPeers {
			if q == p {
				return &OptionError{"bgp-peer", s, "named twice"}
			}
		}
		v.bgpPeers = append(v.bgpPeers, p)
	}
	if reason := asnProblem(o.BGPPeerASN); reason != "" {
		return &OptionError{"bgp-peer-asn", fmt.Sprint(o.BGPPeerASN), reason}
	}
	if reason := asnProblem(o.BGPASN); reason != "" {
		return &OptionError{"bgp-asn", fmt.Sprint(o.BGPASN), reason}
	}
	v.bgpPeerASN, v.bgpASN = o.BGPPeerASN, o.BGPASN
	if f := o.BGPPasswordFile; f != "" {
		if reason := hostFileProblem(f); reason != "" {
			return &OptionError{"bgp-password-file", f, reason}
		}
		if seen[f] {
			return &OptionError{"bgp-password-file", f, "is also a key file or the API server's CA"}
		}
		v.bgpPasswordFile = f
	}
	return nil
}

// parseVIP parses a control-plane VIP: one unicast address, written the
// canonical way or not, never with a zone or as an IPv4-mapped IPv6 address
// (the speaker and the kube-apiserver's certificate need one spelling).
func parseVIP(s string) (netip.Addr, error) {
	vip, err := netip.ParseAddr(s)
	switch {
	case s == "":
		return vip, &OptionError{"vip", s, "required"}
	case err != nil:
		return vip, &OptionError{"vip", s, "not an IP address"}
	case vip.Zone() != "" || vip.Is4In6():
		return vip, &OptionError{"vip", s, "an address without a zone or IPv4-mapped form"}
	case vip.IsUnspecified() || vip.IsLoopback() || vip.IsMulticast() || vip.IsLinkLocalUnicast() ||
		vip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return vip, &OptionError{"vip", s, "not a unicast address a LAN or a router can carry"}
	}
	return vip, nil
}

// interfaceNameProblem says what is wrong with a Linux interface name
// (dev_valid_name: under IFNAMSIZ bytes, not . or .., no /, : or white
// space), restricted to printable ASCII.
func interfaceNameProblem(s string) string {
	if len(s) > 15 {
		return "longer than 15 bytes (IFNAMSIZ)"
	}
	if s == "." || s == ".." {
		return "not an interface name"
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' {
			return "has a character an interface name cannot have"
		}
	}
	return ""
}

// hostFileProblem says what is wrong with the path of a file on the node
// the pod mounts: it must be absolute, clean and plain ASCII.
func hostFileProblem(p string) string {
	if len(p) > maxPathLen {
		return fmt.Sprintf("longer than %d bytes", maxPathLen)
	}
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return "not an absolute, clean path to a file"
	}
	for _, c := range []byte(p) {
		if c <= ' ' || c >= 0x7f {
			return "has a space, control or non-ASCII character"
		}
	}
	return ""
}

// asnProblem says what is wrong with a BGP AS number: 0, AS_TRANS (23456)
// and the last of the 2- and 4-byte spaces are reserved (RFC 7607, 6793,
// 7300).
func asnProblem(asn uint32) string {
	switch asn {
	case 0:
		return "required (1 to 4294967294)"
	case 23456, 65535, 4294967295:
		return "a reserved AS number"
	}
	return ""
}
