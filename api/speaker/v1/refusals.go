package speakerv1

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reasons a speaker ends a Sync stream with, carried as an
// errdetails.ErrorInfo of domain ErrorDomain in the stream's status, so
// that the CCM tells them apart without reading English.
const (
	ErrorDomain = "ironlb.dev"
	// ReasonFenced: the speaker follows a leader of a higher term.
	ReasonFenced = "FENCED"
	// ReasonShuttingDown: the speaker withdrew every VIP and is exiting.
	ReasonShuttingDown = "SHUTTING_DOWN"
	// ReasonRefused: an instruction did not follow the stream's order.
	ReasonRefused = "REFUSED"
	// ReasonUntrusted: the certificate the CCM opened the connection
	// with no longer verifies against the CAs the speaker trusts (a CA
	// was removed, or it expired): the CCM must connect again.
	ReasonUntrusted = "UNTRUSTED"
	// ReasonRestarting: the speaker process is stopping (SIGTERM) but
	// withdrew nothing: a planned restart, after which a new process on
	// the same node takes over. The CCM keeps the node's VIPs on it while
	// the node stays Ready and schedulable and its host still refuses
	// connections (it is up), for a restart grace.
	ReasonRestarting = "RESTARTING"
)

// StreamError is the status a speaker ends a stream with.
func StreamError(code codes.Code, reason, msg string) error {
	st := status.New(code, msg)
	if with, err := st.WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: reason}); err == nil {
		st = with
	}
	return st.Err()
}

// StreamErrorReason returns the reason a speaker gave for ending a stream,
// "" if it gave none.
func StreamErrorReason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}
