// Package kubeadm reads the control-plane VIP of a kubeadm cluster from
// kube-system/kubeadm-config: the host of its ClusterConfiguration's
// controlPlaneEndpoint, when that host is an IP address. A DNS name is
// not resolved (what it resolves to may change, and resolving it would
// let DNS take addresses out of IronLB's pools): the administrator lists
// the VIP in the cloud config instead.
package kubeadm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Namespace and Name locate kubeadm's ConfigMap; DataKey is its
// ClusterConfiguration.
const (
	Namespace = "kube-system"
	Name      = "kubeadm-config"
	DataKey   = "ClusterConfiguration"
)

// maxClusterConfiguration bounds the ClusterConfiguration read (kubeadm
// writes about 1 KiB).
const maxClusterConfiguration = 64 << 10

// Endpoint is a cluster's controlPlaneEndpoint.
type Endpoint struct {
	// VIP is its host when that is an IP address.
	VIP netip.Addr
	// Host is its host when that is a DNS name (not resolved).
	Host string
}

// clusterConfiguration is the part of kubeadm's ClusterConfiguration
// IronLB reads.
type clusterConfiguration struct {
	APIVersion           string `json:"apiVersion"`
	Kind                 string `json:"kind"`
	ControlPlaneEndpoint string `json:"controlPlaneEndpoint"`
}

// ErrInvalid means the ConfigMap's ClusterConfiguration or its
// controlPlaneEndpoint does not parse.
var ErrInvalid = errors.New("invalid kubeadm ClusterConfiguration")

// EndpointOf returns the controlPlaneEndpoint of kubeadm's ConfigMap: the
// zero Endpoint when it sets none (one control-plane node, no VIP).
func EndpointOf(cm *v1.ConfigMap) (Endpoint, error) {
	data, ok := cm.Data[DataKey]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %s/%s has no %s", ErrInvalid, cm.Namespace, cm.Name, DataKey)
	}
	if len(data) > maxClusterConfiguration {
		return Endpoint{}, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrInvalid, DataKey, len(data), maxClusterConfiguration)
	}
	j, err := yaml.YAMLToJSONStrict([]byte(data))
	if err != nil {
		return Endpoint{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var cc clusterConfiguration
	if err := json.Unmarshal(j, &cc); err != nil {
		return Endpoint{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	group, _, _ := strings.Cut(cc.APIVersion, "/")
	if group != "kubeadm.k8s.io" || cc.Kind != "ClusterConfiguration" {
		return Endpoint{}, fmt.Errorf("%w: apiVersion %q, kind %q; want kubeadm.k8s.io/*, ClusterConfiguration", ErrInvalid, cc.APIVersion, cc.Kind)
	}
	return ParseEndpoint(cc.ControlPlaneEndpoint)
}

// ParseEndpoint parses a controlPlaneEndpoint as kubeadm accepts it: a
// host (IP address or DNS name) with an optional port, an IPv6 address
// in brackets when a port follows.
func ParseEndpoint(s string) (Endpoint, error) {
	if s == "" {
		return Endpoint{}, nil
	}
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
			return Endpoint{}, fmt.Errorf("%w: controlPlaneEndpoint %q: port %q is not a number from 1 to 65535", ErrInvalid, s, port)
		}
		host = h
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" || a.Is4In6() || !a.IsGlobalUnicast() {
			return Endpoint{}, fmt.Errorf("%w: controlPlaneEndpoint %q: %s is not an address a host can serve", ErrInvalid, s, a)
		}
		return Endpoint{VIP: a}, nil
	}
	if msgs := validation.IsDNS1123Subdomain(host); len(msgs) > 0 {
		return Endpoint{}, fmt.Errorf("%w: controlPlaneEndpoint %q: neither an IP address nor a DNS name: %s", ErrInvalid, s, strings.Join(msgs, "; "))
	}
	return Endpoint{Host: host}, nil
}
