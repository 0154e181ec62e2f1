package dhcp

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
)

// Request identifies a virtual client.
type Request struct {
	// ClientID is the value of option 61, sent as-is (1 to 255 bytes;
	// the caller builds it, e.g. type 0 followed by a Service's UID).
	ClientID []byte
	// Requested is optional. In Acquire it is the address asked for in
	// the DISCOVER (option 50): an OFFER of another address fails with a
	// *NotRequestedError. In Renew it is the address to renew (required).
	Requested netip.Addr
	// Hostname is optional, sent as option 12; it must be an RFC 1123
	// label (letters, digits and hyphens, not starting or ending with a
	// hyphen, at most 63 bytes).
	Hostname string
}

// HardwareAddr returns the hardware address (chaddr) used for clientID: a
// locally administered unicast MAC made of the first 6 bytes of the
// SHA-256 of clientID, so that the server sees the same address whichever
// node asks. It is never sent as an Ethernet source address (frames carry
// the node's own MAC).
func HardwareAddr(clientID []byte) net.HardwareAddr {
	h := sha256.Sum256(clientID)
	mac := net.HardwareAddr(h[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// validHostname reports whether s is an RFC 1123 label.
func validHostname(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-') {
			return false
		}
	}
	return true
}

func (r Request) validate() error {
	if len(r.ClientID) == 0 || len(r.ClientID) > 255 {
		return fmt.Errorf("dhcp: client identifier of %d bytes, want 1 to 255", len(r.ClientID))
	}
	if r.Hostname != "" && !validHostname(r.Hostname) {
		return fmt.Errorf("dhcp: invalid hostname %q", r.Hostname)
	}
	if r.Requested.IsValid() && !validLeaseAddr(r.Requested) {
		return fmt.Errorf("dhcp: requested address %v is not a unicast IPv4 address", r.Requested)
	}
	return nil
}
