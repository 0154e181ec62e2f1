package v1alpha1

import (
	"bytes"
	"strings"
	"testing"
)

func TestCheckBGPPassword(t *testing.T) {
	tests := []struct {
		name string
		pw   string
		ok   bool
	}{
		{"plain", "s3cret", true},
		{"inner space and symbols", "a b~!@#$%^&*()_+{}|:<>?", true},
		{"80 bytes", strings.Repeat("x", 80), true},
		{"81 bytes", strings.Repeat("x", 81), false},
		{"empty", "", false},
		{"trailing newline (kubectl --from-file)", "s3cret\n", false},
		{"leading space", " s3cret", false},
		{"trailing space", "s3cret ", false},
		{"NUL", "s3\x00cret", false},
		{"DEL", "s3\x7fcret", false},
		{"UTF-8", "sécret", false},
		{"a PEM key", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI\n-----END EC PRIVATE KEY-----\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckBGPPassword([]byte(tc.pw))
			if (err == nil) != tc.ok {
				t.Fatalf("CheckBGPPassword(%q) = %v, want ok %v", tc.pw, err, tc.ok)
			}
			if err != nil && tc.pw != "" && strings.Contains(err.Error(), tc.pw) {
				t.Errorf("the error %q contains the password", err)
			}
		})
	}
}

// FuzzCheckBGPPassword checks that whatever CheckBGPPassword accepts is
// 1 to 80 printable ASCII bytes without a space at either end.
func FuzzCheckBGPPassword(f *testing.F) {
	for _, s := range []string{"s3cret", "", " x", "x\n", strings.Repeat("y", 81), "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, pw []byte) {
		if CheckBGPPassword(pw) != nil {
			return
		}
		if len(pw) == 0 || len(pw) > MaxBGPPasswordLength {
			t.Fatalf("accepted %d bytes", len(pw))
		}
		if bytes.ContainsFunc(pw, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			t.Fatalf("accepted %q", pw)
		}
		if pw[0] == ' ' || pw[len(pw)-1] == ' ' {
			t.Fatalf("accepted %q", pw)
		}
	})
}
