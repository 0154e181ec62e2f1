package loadbalancer

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

// RequestErrorReason says which rule a Service's address request broke.
type RequestErrorReason string

// Reasons of a RequestError.
const (
	// ReasonInvalidSharingKey: an allow-shared-ip annotation is not a
	// sharing key (SharingKeyRule).
	ReasonInvalidSharingKey RequestErrorReason = "InvalidSharingKey"
	// ReasonInvalidPoolName: an address-pool annotation is not an IPPool's
	// name (a DNS subdomain).
	ReasonInvalidPoolName RequestErrorReason = "InvalidPoolName"
	// ReasonInvalidAddresses: a load-balancer-IPs annotation or
	// spec.loadBalancerIP is not a list of at most one usable IPv4 and one
	// IPv6 address.
	ReasonInvalidAddresses RequestErrorReason = "InvalidAddresses"
	// ReasonInvalidSharingNamespaces: the sharing-cross-namespace
	// annotation is not "*" or a list of namespace names.
	ReasonInvalidSharingNamespaces RequestErrorReason = "InvalidSharingNamespaces"
	// ReasonAnnotationsDisagree: two spellings of one annotation (or the
	// addresses annotation and spec.loadBalancerIP) say different things.
	ReasonAnnotationsDisagree RequestErrorReason = "AnnotationsDisagree"
)

// RequestError is an address request IronLB refuses because a Service's
// annotation (or spec.loadBalancerIP) does not follow its grammar. The
// Service keeps what it holds; the service controller reports the error as
// a Warning Event (SyncLoadBalancerFailed) on it and retries.
type RequestError struct {
	Reason RequestErrorReason
	// Field is the annotation or spec field at fault.
	Field string
	Err   error
}

func (e *RequestError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %v", e.Reason, e.Err)
	}
	return fmt.Sprintf("%s: %s: %v", e.Reason, e.Field, e.Err)
}

func (e *RequestError) Unwrap() error { return e.Err }

// ReasonOf returns the reason of the RequestError in err's chain, "" if
// there is none.
func ReasonOf(err error) RequestErrorReason {
	if re, ok := errors.AsType[*RequestError](err); ok {
		return re.Reason
	}
	return ""
}

func requestError(reason RequestErrorReason, field, format string, args ...any) *RequestError {
	return &RequestError{Reason: reason, Field: field, Err: fmt.Errorf(format, args...)}
}

// MaxSharingKeyLen bounds a sharing key, as Kubernetes bounds a label
// value.
const MaxSharingKeyLen = 63

// SharingKeyRule is the grammar of a sharing key, said for users.
const SharingKeyRule = "a sharing key is at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit (like a label value)"

var sharingKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

// ValidateSharingKey fails unless key follows SharingKeyRule: the grammar
// of a Kubernetes label value, which every key MetalLB's documentation
// shows follows ("key-to-share-1.2.3.4"). No key can hold the separators
// of the Announced record, whitespace or control characters.
func ValidateSharingKey(key string) error {
	if len(key) > MaxSharingKeyLen || !sharingKeyRE.MatchString(key) {
		return fmt.Errorf("%s is not a sharing key: %s", quoteValue(key), SharingKeyRule)
	}
	return nil
}

// maxCrossNamespaces bounds the namespaces one Service may name in
// AnnotationSharingCrossNamespace ("*" names them all).
const maxCrossNamespaces = 64

// maxShownValue bounds how much of a refused value an error quotes.
const maxShownValue = 64

// quoteValue quotes an untrusted annotation value for an error message:
// control characters and escape sequences escaped, at most maxShownValue
// bytes of it.
func quoteValue(v string) string {
	if len(v) > maxShownValue {
		return strconv.Quote(v[:maxShownValue]) + fmt.Sprintf("… (%d bytes)", len(v))
	}
	return strconv.Quote(v)
}
