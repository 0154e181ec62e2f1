package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
)

// Errors returned by the Client; test with errors.Is.
var (
	// ErrNAK is wrapped by *NAKError: the server refused the request.
	ErrNAK = errors.New("dhcp: server sent DHCPNAK")
	// ErrNoAnswer: no OFFER or ACK before the context ended or the
	// retransmissions gave up.
	ErrNoAnswer = errors.New("dhcp: no answer from a DHCP server")
	// ErrNotRequested is wrapped by *NotRequestedError: Acquire with
	// Request.Requested set was offered another address.
	ErrNotRequested = errors.New("dhcp: server offered another address than the one requested")
	// ErrBusy: the Client already runs its maximum number of exchanges.
	ErrBusy = errors.New("dhcp: too many exchanges in progress")
	// ErrClosed: the Client is closed.
	ErrClosed = errors.New("dhcp: client closed")
)

// NAKError is a DHCPNAK. It wraps ErrNAK.
type NAKError struct {
	// Server is the server identifier of the NAK, or its IP source if it
	// has none.
	Server netip.Addr
	// Message is the server's message (option 56), printable ASCII only,
	// at most 128 bytes; empty if none.
	Message string
}

// Error implements error.
func (e *NAKError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("dhcp: server %v sent DHCPNAK", e.Server)
	}
	return fmt.Sprintf("dhcp: server %v sent DHCPNAK: %q", e.Server, e.Message)
}

// Unwrap returns ErrNAK.
func (e *NAKError) Unwrap() error { return ErrNAK }

// NotRequestedError is an OFFER of another address than the requested
// one, which the Client did not request. It wraps ErrNotRequested.
type NotRequestedError struct {
	Requested netip.Addr
	Offered   netip.Addr
	Server    netip.Addr
}

// Error implements error.
func (e *NotRequestedError) Error() string {
	return fmt.Sprintf("dhcp: server %v offered %v, not the requested %v", e.Server, e.Offered, e.Requested)
}

// Unwrap returns ErrNotRequested.
func (e *NotRequestedError) Unwrap() error { return ErrNotRequested }
