package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// newMessage returns a BOOTREQUEST of type t for r, with the broadcast flag,
// the client identifier, the hostname and, except for RELEASE and DECLINE,
// a parameter request list and maximum message size.
func newMessage(t messageType, xid uint32, r Request) *message {
	m := &message{
		Op:     opRequest,
		Xid:    xid,
		Flags:  flagBroadcast,
		CHAddr: HardwareAddr(r.ClientID),
		Type:   t,
		Options: map[uint8][]byte{
			optClientID: r.ClientID,
		},
	}
	if r.Hostname != "" && t != msgRelease && t != msgDecline {
		m.Options[optHostname] = []byte(r.Hostname)
	}
	if t == msgDiscover || t == msgRequest {
		m.Options[optParamRequest] = []byte{optSubnetMask, optRouter, optLeaseTime, optServerID, optRenewalTime, optRebindTime}
		m.Options[optMaxMsgSize] = binary.BigEndian.AppendUint16(nil, maxMsgLen+ipv4HeaderLen+udpHeaderLen)
	}
	return m
}

func addrBytes(a netip.Addr) []byte {
	b := a.As4()
	return b[:]
}

// Acquire leases an address for r: DISCOVER, the first acceptable OFFER,
// REQUEST, ACK. With r.Requested set, an OFFER of another address ends the
// exchange with a *NotRequestedError (nothing is requested). A NAK gives a
// *NAKError, no answer ErrNoAnswer.
func (c *Client) Acquire(ctx context.Context, r Request) (Lease, error) {
	if err := r.validate(); err != nil {
		return Lease{}, err
	}
	xid, ex, err := c.begin(r)
	if err != nil {
		return Lease{}, err
	}
	defer c.end(xid)

	disc := newMessage(msgDiscover, xid, r)
	if r.Requested.IsValid() {
		disc.Options[optRequestedIP] = addrBytes(r.Requested)
	}
	var offer Lease
	err = c.transact(ctx, ex, disc, func(rep reply) (bool, error) {
		if rep.msg.Type != msgOffer {
			return false, nil
		}
		l, err := leaseFrom(rep, false)
		if err != nil {
			return false, nil // a bad offer: wait for another
		}
		if r.Requested.IsValid() && l.Addr != r.Requested {
			return true, &NotRequestedError{Requested: r.Requested, Offered: l.Addr, Server: l.Server}
		}
		offer = l
		return true, nil
	})
	if err != nil {
		return Lease{}, err
	}

	req := newMessage(msgRequest, xid, r)
	req.Options[optRequestedIP] = addrBytes(offer.Addr)
	req.Options[optServerID] = addrBytes(offer.Server)
	return c.request(ctx, ex, req, offer.Addr, offer.Server)
}

// Renew extends the lease of r.Requested, INIT-REBOOT style: a broadcast
// REQUEST with option 50 = r.Requested, ciaddr 0 and no server identifier,
// so the reply is broadcast whichever node sends it. An ACK gives the
// extended lease; a NAK a *NAKError (the address is no longer the
// client's), no answer ErrNoAnswer.
func (c *Client) Renew(ctx context.Context, r Request) (Lease, error) {
	if err := r.validate(); err != nil {
		return Lease{}, err
	}
	if !r.Requested.IsValid() {
		return Lease{}, errors.New("dhcp: renew: no address requested")
	}
	xid, ex, err := c.begin(r)
	if err != nil {
		return Lease{}, err
	}
	defer c.end(xid)
	req := newMessage(msgRequest, xid, r)
	req.Options[optRequestedIP] = addrBytes(r.Requested)
	return c.request(ctx, ex, req, r.Requested, netip.Addr{})
}

// request sends REQUEST req until an ACK for addr (from server, if valid)
// or a NAK.
func (c *Client) request(ctx context.Context, ex *exchange, req *message, addr, server netip.Addr) (Lease, error) {
	var lease Lease
	err := c.transact(ctx, ex, req, func(rep reply) (bool, error) {
		switch rep.msg.Type {
		case msgNak:
			sid, ok := rep.msg.addrOption(optServerID)
			if !ok {
				sid = rep.src
			}
			if server.IsValid() && sid != server {
				return false, nil // another server's opinion
			}
			return true, &NAKError{Server: sid, Message: sanitizeMessage(rep.msg.Options[optMessage])}
		case msgAck:
			l, err := leaseFrom(rep, true)
			if err != nil || l.Addr != addr || (server.IsValid() && l.Server != server) {
				return false, nil
			}
			lease = l
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return Lease{}, err
	}
	return lease, nil
}

// Release sends a DHCPRELEASE of l (ciaddr l.Addr, server identifier
// l.Server), unicast to l.Server at l.ServerMAC (broadcast MAC if nil),
// from l.Addr. No reply is expected: the server may not get it.
func (c *Client) Release(ctx context.Context, r Request, l Lease) error {
	if err := r.validate(); err != nil {
		return err
	}
	if !validLeaseAddr(l.Addr) || !l.Server.Is4() {
		return fmt.Errorf("dhcp: release: lease without address or server")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dhcp: release %v: %w", l.Addr, err)
	}
	xid, _, err := c.begin(r)
	if err != nil {
		return err
	}
	defer c.end(xid)
	m := newMessage(msgRelease, xid, r)
	m.CIAddr = l.Addr
	m.Options[optServerID] = addrBytes(l.Server)
	mac := l.ServerMAC
	if len(mac) != 6 {
		mac = broadcastMAC
	}
	return c.send(m, l.Addr, l.Server, mac)
}

// Decline sends a DHCPDECLINE of l (option 50 l.Addr, server identifier
// l.Server), broadcast, e.g. after finding the address in use. No reply is
// expected.
func (c *Client) Decline(ctx context.Context, r Request, l Lease) error {
	if err := r.validate(); err != nil {
		return err
	}
	if !validLeaseAddr(l.Addr) || !l.Server.Is4() {
		return fmt.Errorf("dhcp: decline: lease without address or server")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dhcp: decline %v: %w", l.Addr, err)
	}
	xid, _, err := c.begin(r)
	if err != nil {
		return err
	}
	defer c.end(xid)
	m := newMessage(msgDecline, xid, r)
	m.Options[optRequestedIP] = addrBytes(l.Addr)
	m.Options[optServerID] = addrBytes(l.Server)
	return c.send(m, netip.IPv4Unspecified(), broadcastIPv4, broadcastMAC)
}
