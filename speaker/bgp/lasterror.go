package bgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// recordPeerEvent turns a gobgp log message about a peer into its last
// error; an established session clears it.
func (g *GoBGP) recordPeerEvent(msg string, f gobgplog.Fields) {
	key, _ := f["Key"].(string)
	peer, err := netip.ParseAddr(key)
	if err != nil {
		return
	}
	var why string
	switch msg {
	case "Peer Up":
		g.errMu.Lock()
		delete(g.lastErr, peer)
		g.errMu.Unlock()
		return
	case "failed to connect":
		why = connectError(peer, f["Error"])
	case "received notification":
		why = "the peer sent a notification: " + notificationText(f["Code"], f["Subcode"])
		if c, ok := f["Communicated-Reason"].(string); ok && c != "" {
			why += " (" + c + ")"
		}
	case "sent notification":
		why = "closed the session with a notification to the peer"
		if d, ok := f["Data"]; ok {
			why += fmt.Sprintf(": %v", d)
		}
	case "hold timer expired":
		why = "hold timer expired: nothing heard from the peer within the hold time"
	case "Peer Down":
		if r, ok := f["Reason"].(string); ok {
			g.errMu.Lock()
			if _, had := g.lastErr[peer]; !had {
				g.lastErr[peer] = "session went down: " + r
			}
			g.errMu.Unlock()
		}
		return
	default:
		return
	}
	g.recordError(peer, why)
}

// recordError sets peer's last error.
func (g *GoBGP) recordError(peer netip.Addr, why string) {
	g.errMu.Lock()
	g.lastErr[peer] = why
	g.errMu.Unlock()
}

// connectError explains a failed dial in an operator's words.
func connectError(peer netip.Addr, v any) string {
	err, _ := v.(error)
	if err == nil {
		return fmt.Sprintf("cannot connect to %s: %v", peer, v)
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("connection to %s refused: is BGP configured there for this node (neighbor address, port)?", peer)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("no route to %s from this node", peer)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("no answer from %s: a wrong or missing TCP MD5 password, a firewall, or the peer is down", peer)
	}
	return fmt.Sprintf("cannot connect to %s: %v", peer, err)
}

// notificationText names a BGP NOTIFICATION (RFC 4271 section 4.5).
func notificationText(code, subcode any) string {
	c := fmt.Sprint(code)
	s := fmt.Sprint(subcode)
	switch c + "/" + s {
	case "2/2":
		return "bad peer AS (peerASN or the router's remote-as is wrong)"
	case "2/3":
		return "bad BGP identifier (routerID)"
	case "2/6":
		return "unacceptable hold time"
	case "4/0":
		return "hold timer expired"
	case "6/2":
		return "administrative shutdown"
	case "6/3":
		return "peer de-configured"
	case "6/4":
		return "administrative reset"
	case "6/5":
		return "connection rejected"
	}
	names := map[string]string{"1": "message header error", "2": "OPEN message error", "3": "UPDATE message error", "4": "hold timer expired", "5": "finite state machine error", "6": "cease"}
	if n, ok := names[c]; ok {
		return strings.TrimSpace(fmt.Sprintf("%s (code %s, subcode %s)", n, c, s))
	}
	return fmt.Sprintf("code %s, subcode %s", c, s)
}
