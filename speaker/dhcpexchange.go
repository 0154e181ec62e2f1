package speaker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/speaker/dhcp"
)

// DHCP exchanges (api/speaker/v1: DHCPExchange): the CCM keeps the leases
// of DHCP-backed pools and has the speaker talk to the LAN's server. An
// exchange runs in its own goroutine, bounded in number, and its result
// goes back on the stream that asked, in a report of its own.

// DHCPClient runs exchanges on one interface; *dhcp.Client implements it.
type DHCPClient interface {
	Acquire(ctx context.Context, r dhcp.Request) (dhcp.Lease, error)
	Renew(ctx context.Context, r dhcp.Request) (dhcp.Lease, error)
	Release(ctx context.Context, r dhcp.Request, l dhcp.Lease) error
	Decline(ctx context.Context, r dhcp.Request, l dhcp.Lease) error
}

// DHCPOpener opens the DHCP client of an interface.
type DHCPOpener func(ifi *net.Interface) (DHCPClient, error)

// WithDHCP lets the agent run DHCP exchanges, with clients open opens
// (one per interface, kept).
func WithDHCP(open DHCPOpener) Option {
	return func(a *Agent) { a.dhcp = &dhcpRunner{open: open, clients: map[string]DHCPClient{}} }
}

// Bounds of DHCP exchanges: how many run at once, how long one may take,
// the client identifier's length.
const (
	maxDHCPExchanges = 32
	maxDHCPTimeout   = 30 * time.Second
	maxDHCPClientID  = 64
)

// dhcpRunner holds the agent's DHCP clients.
type dhcpRunner struct {
	open    DHCPOpener
	mu      sync.Mutex
	clients map[string]DHCPClient // by interface name
	running int
}

// client returns the client of the interface named name, opening it once.
func (d *dhcpRunner) client(ifi *net.Interface) (DHCPClient, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.clients[ifi.Name]; ok {
		return c, nil
	}
	c, err := d.open(ifi)
	if err != nil {
		return nil, fmt.Errorf("opening a DHCP client on %s: %w", ifi.Name, err)
	}
	d.clients[ifi.Name] = c
	return c, nil
}

// take counts an exchange in, false when too many run.
func (d *dhcpRunner) take() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running >= maxDHCPExchanges {
		return false
	}
	d.running++
	return true
}

func (d *dhcpRunner) done() {
	d.mu.Lock()
	d.running--
	d.mu.Unlock()
}

// handleDHCP starts the exchange ex asked on stream id and answers it
// when it ends; it answers at once when it cannot run it.
func (a *Agent) handleDHCP(ctx context.Context, id uint64, ex *speakerv1.DHCPExchange, rp *reporter) error {
	answer := func(res *speakerv1.DHCPResult) error {
		res.Id = ex.GetId()
		r := a.report(id, false)
		r.Dhcp = []*speakerv1.DHCPResult{res}
		return rp.send(r)
	}
	if a.dhcp == nil {
		return answer(&speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_INVALID, Message: "this speaker runs no DHCP exchanges"})
	}
	a.mu.Lock()
	fenced := ex.GetTerm() < a.term
	a.mu.Unlock()
	if fenced {
		return answer(&speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_FENCED})
	}
	job, err := a.parseDHCP(ex)
	if err != nil {
		instructionsTotal.WithLabelValues("dhcp", "refused").Inc()
		return answer(&speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_INVALID, Message: err.Error()})
	}
	if !a.dhcp.take() {
		instructionsTotal.WithLabelValues("dhcp", "busy").Inc()
		return answer(&speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_BUSY})
	}
	instructionsTotal.WithLabelValues("dhcp", "applied").Inc()
	go func() {
		defer a.dhcp.done()
		res := a.runDHCP(ctx, job)
		if err := answer(res); err != nil {
			a.log.V(1).Info("Could not answer a DHCP exchange; the stream ended", "op", job.op, "err", err)
		}
	}()
	return nil
}

// dhcpJob is a checked DHCPExchange.
type dhcpJob struct {
	op      speakerv1.DHCPExchange_Op
	ifi     *net.Interface
	req     dhcp.Request
	lease   dhcp.Lease
	timeout time.Duration
}

// parseDHCP checks ex against the protocol's grammar and this node.
func (a *Agent) parseDHCP(ex *speakerv1.DHCPExchange) (dhcpJob, error) {
	j := dhcpJob{op: ex.GetOp()}
	switch j.op {
	case speakerv1.DHCPExchange_ACQUIRE, speakerv1.DHCPExchange_RENEW, speakerv1.DHCPExchange_RELEASE, speakerv1.DHCPExchange_DECLINE:
	default:
		return j, fmt.Errorf("unknown DHCP operation %d", j.op)
	}
	if n := len(ex.GetClientId()); n < 2 || n > maxDHCPClientID {
		return j, fmt.Errorf("client identifier of %d bytes; want 2 to %d", n, maxDHCPClientID)
	}
	j.req.ClientID = ex.GetClientId()
	if h := ex.GetHostname(); h != "" {
		if len(h) > 63 || strings.Trim(h, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return j, fmt.Errorf("hostname %q is not a DNS label", trunc(h))
		}
		j.req.Hostname = h
	}
	if s := ex.GetAddress(); s != "" {
		addr, err := netip.ParseAddr(s)
		if err != nil || !addr.Is4() {
			return j, fmt.Errorf("address %q is no IPv4 address", trunc(s))
		}
		if err := a.refuseOutside(addr, nil); err != nil {
			return j, err
		}
		j.req.Requested, j.lease.Addr = addr, addr
	} else if j.op != speakerv1.DHCPExchange_ACQUIRE {
		return j, errors.New("the exchange names no address")
	}
	if s := ex.GetServer(); s != "" {
		srv, err := netip.ParseAddr(s)
		if err != nil || !srv.Is4() {
			return j, fmt.Errorf("server %q is no IPv4 address", trunc(s))
		}
		j.lease.Server = srv
	}
	if s := ex.GetServerMac(); s != "" {
		mac, err := net.ParseMAC(s)
		if err != nil || len(mac) != 6 {
			return j, fmt.Errorf("server hardware address %q is no Ethernet address", trunc(s))
		}
		j.lease.ServerMAC = mac
	}
	j.timeout = min(max(time.Duration(ex.GetTimeoutMs())*time.Millisecond, time.Second), maxDHCPTimeout)
	name := ex.GetInterface()
	if name == "" {
		name = a.defaultIfc
	}
	if len(name) > 15 || strings.ContainsAny(name, "/ \t\n:%") {
		return j, fmt.Errorf("interface %q is no interface name", trunc(name))
	}
	ifi, err := a.interfaces(name)
	if err != nil {
		return j, fmt.Errorf("interface %s: %w", name, err)
	}
	j.ifi = ifi
	return j, nil
}

// runDHCP runs j and describes how it ended.
func (a *Agent) runDHCP(ctx context.Context, j dhcpJob) *speakerv1.DHCPResult {
	c, err := a.dhcp.client(j.ifi)
	if err != nil {
		return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_INVALID, Message: trunc(err.Error())}
	}
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	var l dhcp.Lease
	switch j.op {
	case speakerv1.DHCPExchange_ACQUIRE:
		l, err = c.Acquire(ctx, j.req)
	case speakerv1.DHCPExchange_RENEW:
		l, err = c.Renew(ctx, j.req)
	case speakerv1.DHCPExchange_RELEASE:
		err = c.Release(ctx, j.req, j.lease)
	case speakerv1.DHCPExchange_DECLINE:
		err = c.Decline(ctx, j.req, j.lease)
	}
	var nr *dhcp.NotRequestedError
	switch {
	case err == nil && (j.op == speakerv1.DHCPExchange_RELEASE || j.op == speakerv1.DHCPExchange_DECLINE):
		return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_DONE}
	case err == nil:
		a.log.V(1).Info("DHCP lease granted", "op", j.op, "address", l.Addr, "server", l.Server, "lease", l.Duration)
		return grantedResult(l)
	case errors.As(err, &nr):
		return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_NOT_REQUESTED, Address: nr.Offered.String()}
	case errors.Is(err, dhcp.ErrNAK):
		return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_REFUSED, Message: trunc(err.Error())}
	case errors.Is(err, dhcp.ErrNoAnswer):
		return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_NO_ANSWER, Message: trunc(err.Error())}
	case errors.Is(err, dhcp.ErrBusy):
		return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_BUSY}
	}
	return &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_INVALID, Message: trunc(err.Error())}
}

// grantedResult describes lease l.
func grantedResult(l dhcp.Lease) *speakerv1.DHCPResult {
	res := &speakerv1.DHCPResult{Outcome: speakerv1.DHCPResult_GRANTED, Address: l.Addr.String(),
		LeaseSeconds: uint32(min(l.Duration/time.Second, 0xffffffff)), RenewSeconds: uint32(min(l.Renew/time.Second, 0xffffffff))}
	if l.Duration < 0 || l.Duration/time.Second >= 0xffffffff {
		res.LeaseSeconds = 0xffffffff
	}
	if l.Mask.IsValid() {
		res.PrefixLength = uint32(l.Mask.Bits())
	}
	if l.Server.IsValid() {
		res.Server = l.Server.String()
	}
	if l.ServerMAC != nil {
		res.ServerMac = l.ServerMAC.String()
	}
	return res
}

// trunc bounds a text for a message: 256 bytes.
func trunc(s string) string {
	if len(s) > 256 {
		return s[:256]
	}
	return s
}
