package v1alpha1

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// BGPPasswordSecretType is the type a Secret must have for a BGPPeer's
// passwordSecretRef to use it. A Secret's type cannot change after it is
// created, so no Secret made for another purpose (IronLB's CA among them)
// can be turned into a BGP password by whoever may edit BGPPeers.
const BGPPasswordSecretType corev1.SecretType = "ironlb.dev/bgp-password"

// MaxBGPPasswordLength is the longest BGP password in bytes: the kernel's
// TCP MD5 signature key limit (TCP_MD5SIG_MAXKEYLEN).
const MaxBGPPasswordLength = 80

// CheckBGPPassword returns why pw cannot be a BGP session's TCP MD5
// password, nil when it can: 1 to MaxBGPPasswordLength printable ASCII
// characters (space to tilde), with no space at either end, which is what
// routers' configuration languages can express. The error never contains
// pw itself.
func CheckBGPPassword(pw []byte) error {
	switch {
	case len(pw) == 0:
		return fmt.Errorf("the password is empty")
	case len(pw) > MaxBGPPasswordLength:
		return fmt.Errorf("the password is %d bytes, more than the %d a TCP MD5 key holds", len(pw), MaxBGPPasswordLength)
	}
	for i, b := range pw {
		if b < 0x20 || b > 0x7e {
			return fmt.Errorf("byte %d of the password is 0x%02x: only printable ASCII characters are allowed", i, b)
		}
	}
	if pw[0] == ' ' || pw[len(pw)-1] == ' ' {
		return fmt.Errorf("the password starts or ends with a space, which a router's configuration cannot express")
	}
	return nil
}
