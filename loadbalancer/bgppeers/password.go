package bgppeers

import (
	"fmt"
	"slices"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/pki"
)

// ReasonPasswordSecret is the one reason of every password Secret that
// cannot be used: missing, of another type, one of IronLB's own, without
// the key, or with a value that is no password. Its message is the same
// for all of them (passwordUnusable), so that whoever may edit BGPPeers
// learns nothing about which Secrets exist or what they hold; the detail
// goes to the CCM's log only.
const ReasonPasswordSecret Reason = "PasswordSecretNotUsable"

// defaultPasswordKey is the key of the password Secret when the
// reference names none.
const defaultPasswordKey = "password"

// metricsReaderSecretName is deploy/monitoring's token Secret of the
// metrics reader, in IronLB's namespace.
const metricsReaderSecretName = "ironlb-metrics-reader"

// ownSecret reports whether name is one of IronLB's own Secrets, which
// never serve as a BGP password whatever their type.
func ownSecret(name string) bool {
	return name == metricsReaderSecretName || slices.Contains(pki.OwnSecretNames(), name)
}

// passwordUnusable is the status message of every password Secret that
// cannot be used.
func passwordUnusable(name, key string) string {
	return fmt.Sprintf("password Secret %q key %q is not a usable %s Secret: it must be of that type, in IronLB's namespace, not one of IronLB's own, and hold 1 to %d printable ASCII characters under that key",
		name, key, v1alpha1.BGPPasswordSecretType, v1alpha1.MaxBGPPasswordLength)
}

// password reads the password ref points at. When it cannot be used it
// returns a Problem of peer whose Message is passwordUnusable and whose
// Detail, for the log only, says why (never the Secret's content).
func password(peer string, ref *v1alpha1.SecretKeyRef, secrets Secrets) (string, *Problem) {
	key := ref.Key
	if key == "" {
		key = defaultPasswordKey
	}
	unusable := func(format string, args ...any) (string, *Problem) {
		return "", &Problem{Peer: peer, Reason: ReasonPasswordSecret, Message: passwordUnusable(ref.Name, key),
			Detail: fmt.Sprintf(format, args...)}
	}
	if ownSecret(ref.Name) {
		return unusable("Secret %s is one of IronLB's own", ref.Name)
	}
	sec, err := secrets(ref.Name)
	switch {
	case err != nil:
		return unusable("reading Secret %s: %v", ref.Name, err)
	case sec == nil:
		return unusable("no Secret %s of type %s (the CCM sees no Secret of another type)", ref.Name, v1alpha1.BGPPasswordSecretType)
	case sec.Type != v1alpha1.BGPPasswordSecretType:
		return unusable("Secret %s is of type %q, not %s", ref.Name, sec.Type, v1alpha1.BGPPasswordSecretType)
	}
	pw, ok := sec.Data[key]
	if !ok {
		return unusable("Secret %s has no key %q", ref.Name, key)
	}
	if err := v1alpha1.CheckBGPPassword(pw); err != nil {
		return unusable("Secret %s key %q: %v", ref.Name, key, err)
	}
	return string(pw), nil
}
