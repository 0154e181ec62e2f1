package loadbalancer

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ironlb/ironlb/ipam"
)

// Annotations a Service may carry. Each IronLB annotation has MetalLB
// spellings that mean the same, so Services written for MetalLB move over
// unedited; when several spellings are set they must agree.
const (
	AnnotationPool        = "ironlb.dev/pool"
	AnnotationIPs         = "ironlb.dev/load-balancer-ips"
	AnnotationAllowShared = "ironlb.dev/allow-shared-ip"
	// AnnotationSharingCrossNamespace lists the namespaces (comma-separated,
	// or "*") whose Services may share this Service's address under its
	// sharing key. Sharing keys are scoped to the namespace; across
	// namespaces only Services that both carry it, each naming the
	// other's namespace, share.
	AnnotationSharingCrossNamespace = "ironlb.dev/sharing-cross-namespace"
)

var (
	poolAnnotations        = []string{AnnotationPool, "metallb.io/address-pool", "metallb.universe.tf/address-pool"}
	ipsAnnotations         = []string{AnnotationIPs, "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"}
	allowSharedAnnotations = []string{AnnotationAllowShared, "metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip"}
)

// RequestFor turns a Service into an address request. namespaceLabels are
// the labels of the Service's namespace, for pools' namespace selectors.
// Every annotation value is checked against its grammar; a value that
// breaks it is a *RequestError naming the annotation and the rule.
func RequestFor(svc *v1.Service, namespaceLabels map[string]string) (ipam.Request, error) {
	req := ipam.Request{
		Owner: string(svc.UID),
		Name:  svc.Namespace + "/" + svc.Name,
		Subject: ipam.Subject{
			Namespace:       svc.Namespace,
			NamespaceLabels: namespaceLabels,
			Labels:          svc.Labels,
		},
	}
	var err error
	if req.Pool, err = poolName(svc); err != nil {
		return req, err
	}
	key, err := sharingKey(svc)
	if err != nil {
		return req, err
	}
	if req.Sharing.Namespaces, err = crossNamespaces(svc); err != nil {
		return req, err
	}
	req.Sharing.Key = scopedKey(svc, key, req.Sharing.Namespaces)
	if req.Addresses, err = requestedAddresses(svc); err != nil {
		return req, err
	}
	req.Families, req.RequireAll = families(svc)
	req.Sharing.TrafficPolicy, req.Sharing.Ports = trafficPolicy(svc), ports(svc)
	if req.Sharing.TrafficPolicy == string(v1.ServiceExternalTrafficPolicyLocal) {
		req.Sharing.Selector = labels.SelectorFromSet(svc.Spec.Selector).String()
	}
	return req, nil
}

// scopedKey is the allocator's sharing key for a Service's key: scoped to
// its namespace ("ns/key"), or "*/key" when it opts in to sharing across
// namespaces (the allocator then checks both sides' consent). "" stays "".
func scopedKey(svc *v1.Service, key string, crossNamespaces []string) string {
	switch {
	case key == "":
		return ""
	case len(crossNamespaces) > 0:
		return "*/" + key
	}
	return svc.Namespace + "/" + key
}

// poolName parses the address-pool annotations: an IPPool's name.
func poolName(svc *v1.Service) (string, error) {
	name, from, err := oneOf(svc, poolAnnotations)
	if err != nil || name == "" {
		return "", err
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", requestError(ReasonInvalidPoolName, "annotation "+from, "%s is not an IPPool name: %s", quoteValue(name), strings.Join(errs, "; "))
	}
	return name, nil
}

// sharingKey parses the allow-shared-ip annotations (ValidateSharingKey).
func sharingKey(svc *v1.Service) (string, error) {
	key, from, err := oneOf(svc, allowSharedAnnotations)
	if err != nil || key == "" {
		return "", err
	}
	if err := ValidateSharingKey(key); err != nil {
		return "", &RequestError{Reason: ReasonInvalidSharingKey, Field: "annotation " + from, Err: err}
	}
	return key, nil
}

// crossNamespaces parses AnnotationSharingCrossNamespace: "*" or at most
// maxCrossNamespaces namespace names, comma-separated.
func crossNamespaces(svc *v1.Service) ([]string, error) {
	v := strings.TrimSpace(svc.Annotations[AnnotationSharingCrossNamespace])
	if v == "" {
		return nil, nil
	}
	field := "annotation " + AnnotationSharingCrossNamespace
	var out []string
	for ns := range strings.SplitSeq(v, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" {
			continue
		}
		if ns != "*" {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return nil, requestError(ReasonInvalidSharingNamespaces, field, "%s is not a namespace name: %s", quoteValue(ns), strings.Join(errs, "; "))
			}
		}
		if out = append(out, ns); len(out) > maxCrossNamespaces {
			return nil, requestError(ReasonInvalidSharingNamespaces, field, "more than %d namespaces; use \"*\" to share with every namespace", maxCrossNamespaces)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// RestoreRequestFor is the request under which the addresses in a
// Service's status are restored: RequestFor's or, when the Service's
// annotations no longer parse, what can be read of them. Every spelling of
// its sharing annotations counts as a sharing key (ipam.Sharing.Aliases),
// so a Service whose spellings came to disagree keeps a shared address; the
// next sync reports the error. So does a key that breaks SharingKeyRule
// (accepted before keys were checked): sharers keep their address, the
// allocator compares such a key and nothing else (the Announced record
// writes it escaped), and every sync asks the Service to fix it.
func RestoreRequestFor(svc *v1.Service, namespaceLabels map[string]string) ipam.Request {
	req, err := RequestFor(svc, namespaceLabels)
	if err != nil {
		req = ipam.Request{
			Owner:   string(svc.UID),
			Name:    svc.Namespace + "/" + svc.Name,
			Subject: ipam.Subject{Namespace: svc.Namespace, NamespaceLabels: namespaceLabels, Labels: svc.Labels},
			Sharing: ipam.Sharing{TrafficPolicy: trafficPolicy(svc), Ports: ports(svc)},
		}
		req.Families, req.RequireAll = families(svc)
	}
	cross, _ := crossNamespaces(svc)
	for _, k := range allowSharedAnnotations {
		if v := scopedKey(svc, strings.TrimSpace(svc.Annotations[k]), cross); v != "" && v != req.Sharing.Key && !slices.Contains(req.Sharing.Aliases, v) {
			req.Sharing.Aliases = append(req.Sharing.Aliases, v)
		}
	}
	return req
}

func trafficPolicy(svc *v1.Service) string {
	if p := svc.Spec.ExternalTrafficPolicy; p != "" {
		return string(p)
	}
	return string(v1.ServiceExternalTrafficPolicyCluster)
}

func ports(svc *v1.Service) []ipam.Port {
	var out []ipam.Port
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = v1.ProtocolTCP
		}
		out = append(out, ipam.Port{Protocol: string(proto), Port: p.Port})
	}
	return out
}

// oneOf returns the value of the first of keys set on svc (trimmed of
// surrounding whitespace) and the key it came from, and an error if
// another spelling disagrees.
func oneOf(svc *v1.Service, keys []string) (value, from string, err error) {
	for _, k := range keys {
		v := strings.TrimSpace(svc.Annotations[k])
		if v == "" {
			continue
		}
		if from != "" && v != value {
			return "", "", requestError(ReasonAnnotationsDisagree, "", "annotations disagree: %s=%s but %s=%s; keep one", from, quoteValue(value), k, quoteValue(v))
		}
		value, from = v, k
	}
	return value, from, nil
}

// requestedAddresses parses the specific addresses a Service asks for: the
// load-balancer-IPs annotations (comma-separated, one per family) or the
// deprecated spec.loadBalancerIP; when both are set they must agree.
func requestedAddresses(svc *v1.Service) ([]netip.Addr, error) {
	list, from, err := oneOf(svc, ipsAnnotations)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if list != "" {
		if addrs, err = ParseAddressList(list); err != nil {
			return nil, &RequestError{Reason: ReasonInvalidAddresses, Field: "annotation " + from, Err: err}
		}
	}
	lb := strings.TrimSpace(svc.Spec.LoadBalancerIP)
	if lb == "" {
		return addrs, nil
	}
	lbAddrs, err := ParseAddressList(lb)
	if err != nil {
		return nil, &RequestError{Reason: ReasonInvalidAddresses, Field: "spec.loadBalancerIP", Err: err}
	}
	if list == "" {
		return lbAddrs, nil
	}
	if !slices.Contains(addrs, lbAddrs[0]) {
		return nil, requestError(ReasonAnnotationsDisagree, "", "spec.loadBalancerIP %s is not among the annotated addresses %s; keep one", lbAddrs[0], quoteValue(list))
	}
	return addrs, nil
}

// ParseAddressList parses a comma-separated list of at most one IPv4 and
// one IPv6 address.
func ParseAddressList(list string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		a, err := netip.ParseAddr(part)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%s is not an IP address", quoteValue(part))
		case a.Zone() != "":
			return nil, fmt.Errorf("%s: zones are not allowed", quoteValue(part))
		case a.Is4In6():
			return nil, fmt.Errorf("%q: write IPv4-mapped addresses as IPv4", part)
		case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast():
			return nil, fmt.Errorf("%q cannot be a load-balancer address", part)
		}
		for _, prev := range out {
			if ipam.FamilyOf(prev) == ipam.FamilyOf(a) {
				return nil, fmt.Errorf("more than one %s address (%s, %s); give at most one per family", ipam.FamilyOf(a), prev, a)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// families maps a Service's ipFamilies and ipFamilyPolicy onto a request.
func families(svc *v1.Service) ([]ipam.Family, bool) {
	var fams []ipam.Family
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case v1.IPv4Protocol:
			fams = append(fams, ipam.IPv4)
		case v1.IPv6Protocol:
			fams = append(fams, ipam.IPv6)
		}
	}
	if len(fams) == 0 {
		fams = []ipam.Family{ipam.IPv4}
	}
	policy := v1.IPFamilyPolicySingleStack
	if svc.Spec.IPFamilyPolicy != nil {
		policy = *svc.Spec.IPFamilyPolicy
	}
	switch policy {
	case v1.IPFamilyPolicyPreferDualStack:
		return fams, false
	case v1.IPFamilyPolicyRequireDualStack:
		return fams, true
	default:
		return fams[:1], true
	}
}
