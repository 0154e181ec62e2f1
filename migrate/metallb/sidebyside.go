package metallb

import (
	"encoding/json"
	"fmt"
	"sort"

	"sigs.k8s.io/yaml"
)

// LoadBalancerClass is the class IronLB serves by default (the cloud
// config's loadBalancerClass.name), which side-by-side mode's notes name.
const LoadBalancerClass = "ironlb.dev/ironlb"

// lastApplied is kubectl's annotation; frozen copies leave it out (kubectl
// writes its own when they are applied).
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// sideBySideObject names the reports about the mode as a whole.
const sideBySideObject = "side-by-side"

// ConvertSideBySide converts as Convert does, for a migration one Service
// at a time with MetalLB still running. The IPPools cover MetalLB's
// ranges: IronLB never hands out an address that a Service it does not
// serve lists in its status. The Result's MetalLB objects are each
// converted IPAddressPool (or legacy ConfigMap) "frozen", with autoAssign
// false: applied to MetalLB, it keeps the addresses it gave and hands out
// no new ones. What the mode cannot do with both running (BGP sessions
// that MetalLB's speakers already hold) is reported.
func ConvertSideBySide(in *Input) *Result { return convert(in, true) }

// sideBySide adds the frozen MetalLB objects and the mode's reports.
func (c *converter) sideBySide() {
	frozenMaps := map[*legacyConfigMap]map[string]any{}
	for _, p := range c.in.pools {
		ip := c.ipPools[p.Name]
		if ip == nil || c.byName[p.Name] != p {
			continue // not converted: MetalLB keeps handing it out, IronLB does not have it
		}
		already := p.Spec.AutoAssign != nil && !*p.Spec.AutoAssign
		if p.legacy != nil {
			cfg, ok := frozenMaps[p.legacy]
			if !ok {
				var err error
				if cfg, err = deepCopy(p.legacy.config); err != nil {
					c.report(source{object: p.legacy.id}, "data.config", fmt.Sprintf("side-by-side: copying it: %v: no frozen copy written; set auto-assign: false on each pool yourself", err))
				}
				frozenMaps[p.legacy] = cfg
			}
			if pools, ok := cfg["address-pools"].([]any); ok && p.legacyIndex < len(pools) {
				if lp, ok := pools[p.legacyIndex].(map[string]any); ok {
					lp["auto-assign"] = false
				}
			}
		} else {
			c.out.MetalLB = append(c.out.MetalLB, c.frozenPool(p))
		}
		if already {
			c.note(p.src, "spec.autoAssign", fmt.Sprintf("side-by-side: already false: written unchanged for MetalLB, which hands out its addresses only to Services that name an address or the pool; "+
				"IronLB's IPPool %s covers the same addresses, autoAssign false too", ip.Name))
		} else {
			c.note(p.src, "spec.autoAssign", fmt.Sprintf("side-by-side: written with autoAssign false for MetalLB: MetalLB keeps the addresses its Services have and hands out none from this pool "+
				"unless a Service names an address or the pool; IronLB's IPPool %s hands out the same addresses to Services of class %s, never one a MetalLB Service holds", ip.Name, LoadBalancerClass))
		}
		if ip.Spec.BGP != nil {
			c.report(p.src, "", "side-by-side: advertised over BGP, and MetalLB's speakers hold the nodes' sessions with the routers: "+
				"IronLB advertises the Services that move only over sessions of its own (see the BGPPeer lines); otherwise move this pool's Services all at once (docs/migrating-from-metallb.md)")
		}
	}
	for _, cm := range c.in.legacyMaps {
		if cfg := frozenMaps[cm]; cfg != nil {
			c.frozenConfigMap(cm, cfg)
		}
	}
	sort.Slice(c.out.MetalLB, func(i, j int) bool { return objectKey(c.out.MetalLB[i]) < objectKey(c.out.MetalLB[j]) })

	converted := map[string]bool{}
	for _, p := range c.out.Peers {
		converted[p.Name] = true
	}
	for _, p := range c.in.peers {
		if !converted[p.Name] {
			continue
		}
		converted[p.Name] = false // a second peer of the name was not converted
		c.report(p.src, "spec.peerAddress", fmt.Sprintf("side-by-side: MetalLB's speakers hold a session with %s from each node's address, and a router takes one session per neighbor address: "+
			"do not apply the BGPPeer %s of the output unchanged while they run (IronLB's sessions would contend with theirs); give it a peerAddress of its own on the router, or a sourceAddress that is a second address of the nodes, "+
			"configured as a neighbor on the router; or move the BGP pools all at once (docs/migrating-from-metallb.md)", p.Spec.Address, p.Name))
		if p.Spec.BFDProfile != "" {
			c.report(p.src, "spec.bfdProfile", fmt.Sprintf("side-by-side: MetalLB's FRR runs BFD on the nodes' UDP port 3784, where IronLB's speakers listen too: keep bfd off the BGPPeer %s until MetalLB is removed", p.Name))
		}
	}

	c.note(source{object: sideBySideObject}, "", fmt.Sprintf("run IronLB with the cloud config loadBalancerClass: {name: %s, only: true}: it then serves only Services of that class and leaves class-less Services to MetalLB", LoadBalancerClass))
	c.note(source{object: sideBySideObject}, "", "apply the MetalLB objects of the output (written first) before any Service moves; "+
		"with kubectl apply --server-side, add --force-conflicts if another field manager set their autoAssign")
	c.note(source{object: sideBySideObject}, "", fmt.Sprintf("a Service moves keeping its address with two patches: first spec.type: ClusterIP (MetalLB releases the address and withdraws it), "+
		"then spec.type: LoadBalancer, spec.loadBalancerClass: %s and the annotation ironlb.dev/load-balancer-ips: <its old address>; new Services take the class from the start", LoadBalancerClass))
}

// frozenPool is p as MetalLB's IPAddressPool with autoAssign false: the
// same name, namespace, labels, annotations and spec (fields the converter
// does not know included), so applying it changes nothing else.
func (c *converter) frozenPool(p *ipAddressPool) map[string]any {
	ns := p.Namespace
	if ns == "" {
		ns = "metallb-system"
		c.note(p.src, "metadata.namespace", "side-by-side: none in the input: its frozen copy is written for metallb-system, MetalLB's namespace; change it if MetalLB runs in another")
	}
	spec := map[string]any{}
	for k, v := range p.rawSpec {
		spec[k] = v
	}
	spec["autoAssign"] = false
	return map[string]any{"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": metadata(p.Name, ns, p.Labels, p.Annotations), "spec": spec}
}

// frozenConfigMap writes a legacy ConfigMap back with cfg, which has
// auto-assign false on each pool converted.
func (c *converter) frozenConfigMap(cm *legacyConfigMap, cfg map[string]any) {
	text, err := yaml.Marshal(cfg)
	if err != nil {
		c.report(source{object: cm.id}, "", fmt.Sprintf("side-by-side: writing its frozen copy: %v: set auto-assign: false on each pool yourself", err))
		return
	}
	src := source{object: cm.id}
	c.report(src, "", fmt.Sprintf("side-by-side: MetalLB before 0.13, which this format is for, does not know spec.loadBalancerClass (0.13 added it) and takes Services of class %s for its own too: "+
		"upgrade MetalLB to 0.13 or later first (its configuration becomes CRDs: convert those), or migrate all at once", LoadBalancerClass))
	name, ns := cm.name, cm.namespace
	switch {
	case name == "":
		name, ns = "config", "metallb-system"
		c.note(src, "", "side-by-side: the config text alone was read: its frozen copy is written as the ConfigMap metallb-system/config, MetalLB's default; change the name and namespace if yours differ")
	case ns == "":
		ns = "metallb-system"
		c.note(src, "metadata.namespace", "side-by-side: none in the input: its frozen copy is written for metallb-system, MetalLB's namespace; change it if MetalLB runs in another")
	}
	data := map[string]any{}
	for k, v := range cm.data {
		data[k] = v
	}
	data["config"] = string(text)
	c.out.MetalLB = append(c.out.MetalLB, map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": metadata(name, ns, cm.labels, cm.annotations), "data": data})
	c.note(src, "data.config", "side-by-side: written back for MetalLB with auto-assign: false on each pool converted; the config's comments and key order are not kept")
}

// metadata is an object's metadata for a frozen copy, without kubectl's
// last-applied annotation.
func metadata(name, namespace string, labels, annotations map[string]string) map[string]any {
	m := map[string]any{"name": name, "namespace": namespace}
	if len(labels) > 0 {
		m["labels"] = labels
	}
	kept := map[string]string{}
	for k, v := range annotations {
		if k != lastApplied {
			kept[k] = v
		}
	}
	if len(kept) > 0 {
		m["annotations"] = kept
	}
	return m
}

// objectKey orders the MetalLB objects: kind, namespace, name.
func objectKey(o map[string]any) string {
	meta, _ := o["metadata"].(map[string]any)
	kind, _ := o["kind"].(string)
	ns, _ := meta["namespace"].(string)
	name, _ := meta["name"].(string)
	return kind + "\x00" + ns + "\x00" + name
}

// deepCopy copies a generic YAML document.
func deepCopy(m map[string]any) (map[string]any, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}
