package metallb

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// Result is the IronLB configuration equivalent to an Input, and what it
// does not reproduce.
type Result struct {
	// MetalLB are objects to apply to MetalLB (side-by-side mode only):
	// its pools with autoAssign false. They are written first.
	MetalLB []map[string]any
	Pools   []*v1alpha1.IPPool
	Peers   []*v1alpha1.BGPPeer
	Secrets []*corev1.Secret
	Reports []Report
}

// Partial is true when something of the input has no equivalent in the
// output (a report that is not a note).
func (r *Result) Partial() bool {
	for _, rep := range r.Reports {
		if !rep.Note {
			return true
		}
	}
	return false
}

// PeerLabel is put on converted BGPPeers that a BGPAdvertisement names in
// its peers: IronLB advertisements select peers by label.
const PeerLabel = "ironlb.dev/metallb-peer"

// SecretNamespace is where IronLB reads BGP password Secrets.
const SecretNamespace = "ironlb-system"

type converter struct {
	in  *Input
	out *Result
	// byName are the input's pools; ipPools the IPPools made of them.
	byName  map[string]*ipAddressPool
	ipPools map[string]*v1alpha1.IPPool
	// peerLabelled are the peers some advertisement names.
	peerLabelled map[string]bool
	// usedBFD are the BFD profiles some peer uses.
	usedBFD map[string]bool
}

// Convert converts MetalLB's configuration for a switch of every Service
// at once. It never fails: what it cannot convert is in the Result's
// Reports.
func Convert(in *Input) *Result { return convert(in, false) }

func convert(in *Input, sideBySide bool) *Result {
	c := &converter{in: in, out: &Result{Reports: append([]Report(nil), in.reports...)},
		byName: map[string]*ipAddressPool{}, ipPools: map[string]*v1alpha1.IPPool{}, peerLabelled: map[string]bool{}, usedBFD: map[string]bool{}}
	c.pools()
	announced := map[string]bool{}
	c.layer2(announced)
	c.bgp(announced)
	for _, p := range in.pools {
		if !announced[p.Name] && c.ipPools[p.Name] != nil {
			c.report(p.src, "", "no L2Advertisement or BGPAdvertisement selects it, so MetalLB assigns its addresses but does not announce them; "+
				"IronLB has no assign-only pool: it announces a pool with neither layer2 nor bgp over layer 2")
		}
	}
	c.peers()
	var unused []string
	for name := range in.bfdProfiles {
		if !c.usedBFD[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	for _, name := range unused {
		c.note(in.bfdProfiles[name].src, "", "no BGPPeer of the input uses it: nothing to convert (IronLB sets BFD on each BGPPeer)")
	}
	for _, p := range in.pools {
		if ip := c.ipPools[p.Name]; ip != nil && c.byName[p.Name] == p {
			c.out.Pools = append(c.out.Pools, ip) // once: a second pool of the name is not converted
		}
	}
	if sideBySide {
		c.sideBySide()
	}
	sort.Slice(c.out.Pools, func(i, j int) bool { return c.out.Pools[i].Name < c.out.Pools[j].Name })
	sort.Slice(c.out.Peers, func(i, j int) bool { return c.out.Peers[i].Name < c.out.Peers[j].Name })
	sort.Slice(c.out.Secrets, func(i, j int) bool { return c.out.Secrets[i].Name < c.out.Secrets[j].Name })
	return c.out
}

func (c *converter) report(src source, field, msg string) {
	c.out.Reports = append(c.out.Reports, Report{Object: src.object, Field: src.field(field), Message: msg})
}

func (c *converter) note(src source, field, msg string) {
	c.report(src, field, msg)
	c.out.Reports[len(c.out.Reports)-1].Note = true
}

// pools makes an IPPool of each IPAddressPool, without announcement.
func (c *converter) pools() {
	// MetalLB tries the pools with a serviceAllocation first, the lowest
	// priority number first (0 means unset: after those with a number),
	// and only then the pools without one. IronLB tries the highest
	// priority first: rank them so.
	var prios []int
	for _, p := range c.in.pools {
		if sa := p.Spec.ServiceAllocation; sa != nil && sa.Priority > 0 && !containsInt(prios, sa.Priority) {
			prios = append(prios, sa.Priority)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(prios)))
	for _, p := range c.in.pools {
		if c.byName[p.Name] != nil {
			c.report(p.src, "metadata.name", "a second pool of this name: IPPools are cluster-scoped; only the first is converted")
			continue
		}
		c.byName[p.Name] = p
		name := p.Name
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			name = objectName(name)
			c.report(p.src, "metadata.name", fmt.Sprintf("%q is not a valid object name; the IPPool is named %q: Services that name the pool (metallb.universe.tf/address-pool, metallb.io/address-pool) must name %q", p.Name, name, name))
		}
		ip := &v1alpha1.IPPool{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "IPPool"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: p.Labels}}
		for i, a := range p.Spec.Addresses {
			r, err := canonicalRange(a)
			if err != nil {
				c.report(p.src, fmt.Sprintf("spec.addresses[%d]", i), err.Error()+": left out")
				continue
			}
			ip.Spec.Addresses = append(ip.Spec.Addresses, v1alpha1.AddressRange(r))
		}
		if len(ip.Spec.Addresses) == 0 {
			c.report(p.src, "spec.addresses", "no usable address: pool not converted")
			continue
		}
		if p.Spec.AutoAssign != nil && !*p.Spec.AutoAssign {
			ip.Spec.AutoAssign = ptr.To(false)
		}
		ip.Spec.AvoidBuggyIPs = p.Spec.AvoidBuggyIPs
		if sa := p.Spec.ServiceAllocation; sa != nil {
			ip.Spec.Priority = 1
			for i, pr := range prios {
				if pr == sa.Priority {
					ip.Spec.Priority = int32(i + 2)
				}
			}
			ip.Spec.ServiceAllocation = c.serviceAllocation(p.src, sa)
		}
		c.ipPools[p.Name] = ip
	}
}

func (c *converter) serviceAllocation(src source, sa *serviceAllocation) *v1alpha1.ServiceAllocation {
	out := &v1alpha1.ServiceAllocation{}
	for _, ns := range sa.Namespaces {
		out.Namespaces = append(out.Namespaces, v1alpha1.NamespaceName(ns))
	}
	switch {
	case len(sa.NamespaceSelectors) > 0 && len(sa.Namespaces) > 0:
		c.report(src, "spec.serviceAllocation.namespaceSelectors", "MetalLB allows the namespaces listed OR those the selectors match; "+
			"IronLB requires a Service to match namespaces AND namespaceSelector: only namespaces is kept")
	case len(sa.NamespaceSelectors) > 1:
		c.report(src, "spec.serviceAllocation.namespaceSelectors", fmt.Sprintf("%d selectors (any may match); IronLB has one namespaceSelector: only the first is kept", len(sa.NamespaceSelectors)))
		out.NamespaceSelector = &sa.NamespaceSelectors[0]
	case len(sa.NamespaceSelectors) == 1:
		out.NamespaceSelector = &sa.NamespaceSelectors[0]
	}
	if len(sa.ServiceSelectors) > 1 {
		c.report(src, "spec.serviceAllocation.serviceSelectors", fmt.Sprintf("%d selectors (any may match); IronLB has one serviceSelector: only the first is kept", len(sa.ServiceSelectors)))
	}
	if len(sa.ServiceSelectors) > 0 {
		out.ServiceSelector = &sa.ServiceSelectors[0]
	}
	if len(out.Namespaces) == 0 && out.NamespaceSelector == nil && out.ServiceSelector == nil {
		return nil
	}
	return out
}

// selectedPools resolves an advertisement's pool names and selectors; no
// names and no selectors means every pool.
func (c *converter) selectedPools(src source, names []string, sels []metav1.LabelSelector) []string {
	if len(names) == 0 && len(sels) == 0 {
		var all []string
		for _, p := range c.in.pools {
			if c.ipPools[p.Name] != nil && !containsStr(all, p.Name) {
				all = append(all, p.Name)
			}
		}
		if len(all) == 0 {
			c.report(src, "", "selects every IPAddressPool, and the input has none: nothing converted (convert it together with its pools)")
		}
		return all
	}
	var out []string
	for i, n := range names {
		if c.ipPools[n] == nil {
			c.report(src, fmt.Sprintf("spec.ipAddressPools[%d]", i), fmt.Sprintf("pool %q is not in the input (convert it together with its IPAddressPool)", n))
			continue
		}
		if !containsStr(out, n) {
			out = append(out, n)
		}
	}
	for i := range sels {
		sel, err := metav1.LabelSelectorAsSelector(&sels[i])
		if err != nil {
			c.report(src, fmt.Sprintf("spec.ipAddressPoolSelectors[%d]", i), err.Error())
			continue
		}
		matched := false
		for _, p := range c.in.pools {
			if c.ipPools[p.Name] != nil && sel.Matches(labels.Set(p.Labels)) {
				matched = true
				if !containsStr(out, p.Name) {
					out = append(out, p.Name)
				}
			}
		}
		if !matched {
			c.report(src, fmt.Sprintf("spec.ipAddressPoolSelectors[%d]", i), "selects no IPAddressPool of the input (IronLB has no pool selectors: convert it together with its pools)")
		}
	}
	return out
}

// canonicalRange writes a MetalLB address entry as IronLB's CRD wants it:
// a CIDR's network address (MetalLB uses the network too), canonical
// addresses, a range without spaces.
func canonicalRange(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return "", fmt.Errorf("%q is not a CIDR", s)
		}
		return p.Masked().String(), nil
	}
	from, to, ok := strings.Cut(s, "-")
	a, err1 := netip.ParseAddr(strings.TrimSpace(from))
	b, err2 := netip.ParseAddr(strings.TrimSpace(to))
	if !ok || err1 != nil || err2 != nil || a.Is4() != b.Is4() || b.Less(a) {
		return "", fmt.Errorf("%q is neither a CIDR nor a range of two addresses of one family", s)
	}
	return a.String() + "-" + b.String(), nil
}

func selectorKey(s *metav1.LabelSelector) string {
	if s == nil {
		return ""
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func containsInt(l []int, v int) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

// objectName makes a valid object name of a MetalLB pool name: lower case,
// other characters than letters, digits, '-' and '.' as '-'.
func objectName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, ch := range b {
		if (ch < 'a' || ch > 'z') && (ch < '0' || ch > '9') && ch != '-' && ch != '.' {
			b[i] = '-'
		}
	}
	return strings.Trim(string(b), "-.")
}
