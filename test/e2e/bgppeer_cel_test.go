package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBGPPeerValidation: the BGPPeer CRD, as `make generate` writes it,
// rejects malformed peers with readable messages and fills in defaults, on
// a real API server.
func TestBGPPeerValidation(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp := withCRDs(t, ctx, "bgppeers.ironlb.dev")
	const base = "  peerAddress: 192.0.2.1\n  peerASN: 64512\n  myASN: 64513\n"
	cases := []admissionCase{
		{"minimal", base, nil},
		{"everything", "  peerAddress: 2001:db8::1\n  peerASN: 4200000000\n  myASN: 64513\n  peerPort: 1179\n  sourceAddress: 2001:db8::10\n  routerID: 192.0.2.10\n  holdTime: 9s\n  keepaliveTime: 3s\n  connectRetryTime: 2s\n  ebgpMultihop: 4\n  passwordSecretRef: {name: tor-a}\n  nodeSelector:\n    matchLabels: {rack: r1}", nil},
		{"ibgp", "  peerAddress: 192.0.2.1\n  peerASN: 64512\n  myASN: 64512\n", nil},
		{"no hold timer", base + "  holdTime: 0s\n  keepaliveTime: 0s\n", nil},
		{"missing peer", "  peerASN: 64512\n  myASN: 64513\n", []string{"spec.peerAddress", "Required value"}},
		{"peer not an IP", "  peerAddress: tor-a.example\n  peerASN: 64512\n  myASN: 64513\n", []string{"peerAddress must be an IP address in canonical form"}},
		{"peer not canonical", "  peerAddress: 2001:DB8::1\n  peerASN: 64512\n  myASN: 64513\n", []string{"peerAddress must be an IP address in canonical form"}},
		{"peer loopback", "  peerAddress: 127.0.0.1\n  peerASN: 64512\n  myASN: 64513\n", []string{"peerAddress must be a unicast address"}},
		{"peer multicast", "  peerAddress: 224.0.0.5\n  peerASN: 64512\n  myASN: 64513\n", []string{"peerAddress must be a unicast address"}},
		{"ASN zero", "  peerAddress: 192.0.2.1\n  peerASN: 0\n  myASN: 64513\n", []string{"spec.peerASN", "greater than or equal to 1"}},
		{"ASN too big", "  peerAddress: 192.0.2.1\n  peerASN: 4294967296\n  myASN: 64513\n", []string{"spec.peerASN", "less than or equal to 4294967295"}},
		{"port zero", base + "  peerPort: 0\n", []string{"spec.peerPort", "greater than or equal to 1"}},
		{"source of the other family", base + "  sourceAddress: 2001:db8::10\n", []string{"sourceAddress must be of the same IP family as peerAddress"}},
		{"router ID IPv6", base + "  routerID: 2001:db8::1\n", []string{"routerID must be an IPv4 address other than 0.0.0.0"}},
		{"router ID zero", base + "  routerID: 0.0.0.0\n", []string{"routerID must be an IPv4 address other than 0.0.0.0"}},
		{"hold too short", base + "  holdTime: 2s\n", []string{"holdTime must be 0s or between 3s and 65535s"}},
		{"keepalive not shorter", base + "  holdTime: 9s\n  keepaliveTime: 9s\n", []string{"keepaliveTime must be shorter than holdTime"}},
		{"keepalive without hold", base + "  holdTime: 0s\n  keepaliveTime: 3s\n", []string{"keepaliveTime must be 0s when holdTime is 0s"}},
		{"connect retry too short", base + "  connectRetryTime: 100ms\n", []string{"connectRetryTime must be between 1s and 1h"}},
		{"multihop on iBGP", "  peerAddress: 192.0.2.1\n  peerASN: 64512\n  myASN: 64512\n  ebgpMultihop: 3\n", []string{"ebgpMultihop applies to eBGP sessions only"}},
		{"multihop of one", base + "  ebgpMultihop: 1\n", []string{"spec.ebgpMultihop", "greater than or equal to 2"}},
		{"secret without a name", base + "  passwordSecretRef: {key: pw}\n", []string{"spec.passwordSecretRef.name", "Required value"}},
		{"secret with a bad name", base + "  passwordSecretRef: {name: Tor_A}\n", []string{"spec.passwordSecretRef.name"}},
		{"secret is IronLB's CA", base + "  passwordSecretRef: {name: ironlb-ca, key: ca.key}\n", []string{"passwordSecretRef.name must not name one of IronLB's own Secrets"}},
		{"secret is the previous CA", base + "  passwordSecretRef: {name: ironlb-ca-previous}\n", []string{"passwordSecretRef.name must not name one of IronLB's own Secrets"}},
		{"bad node selector", base + "  nodeSelector:\n    matchExpressions: [{key: rack, operator: In}]\n", []string{"In and NotIn need values"}},
		{"bfd and graceful restart", base + "  bfd: {enabled: true}\n  gracefulRestart: {enabled: true}\n", nil},
		{"bfd fast", base + "  bfd: {enabled: true, receiveInterval: 10ms, transmitInterval: 100ms, detectMultiplier: 255}\n  gracefulRestart: {enabled: true, restartTime: 4095s}\n", nil},
		{"bfd too fast", base + "  bfd: {enabled: true, receiveInterval: 9ms}\n", []string{"receiveInterval must be between 10ms and 60s"}},
		{"bfd transmit too slow", base + "  bfd: {enabled: true, transmitInterval: 61s}\n", []string{"transmitInterval must be between 10ms and 60s"}},
		{"bfd multiplier zero", base + "  bfd: {enabled: true, detectMultiplier: 0}\n", []string{"spec.bfd.detectMultiplier", "greater than or equal to 1"}},
		{"bfd without enabled", base + "  bfd: {receiveInterval: 100ms}\n", []string{"spec.bfd.enabled", "Required value"}},
		{"restart time too long", base + "  gracefulRestart: {enabled: true, restartTime: 4096s}\n", []string{"restartTime must be between 1s and 4095s"}},
	}
	checkAdmission(t, ctx, cp, "BGPPeer", "p", cases)
	// Defaults as the API server fills them in.
	out, err := cp.Kubectl(ctx, "get", "bgppeer", "p0", "-o", "jsonpath={.spec.peerPort} {.spec.holdTime} {.spec.connectRetryTime}")
	if err != nil {
		t.Fatal(err)
	}
	if want := "179 90s 5s"; strings.TrimSpace(out) != want {
		t.Errorf("defaults %q, want %q", out, want)
	}
	out, err = cp.Kubectl(ctx, "get", "bgppeer", "p1", "-o", "jsonpath={.spec.passwordSecretRef.key}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "password" {
		t.Errorf("passwordSecretRef.key defaults to %q, want password", out)
	}
	// The timers' defaults, on the case "bfd and graceful restart".
	out, err = cp.Kubectl(ctx, "get", "bgppeer", fmt.Sprintf("p%d", slices.IndexFunc(cases, func(c admissionCase) bool { return c.name == "bfd and graceful restart" })), "-o", "jsonpath={.spec.bfd.receiveInterval} {.spec.bfd.transmitInterval} {.spec.bfd.detectMultiplier} {.spec.gracefulRestart.restartTime}")
	if err != nil {
		t.Fatal(err)
	}
	if want := "300ms 300ms 3 120s"; strings.TrimSpace(out) != want {
		t.Errorf("BFD and graceful restart defaults %q, want %q", out, want)
	}
}
