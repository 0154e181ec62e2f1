package metallb

import (
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// peers makes a BGPPeer of each MetalLB BGPPeer.
func (c *converter) peers() {
	seen := map[string]bool{}
	for _, p := range c.in.peers {
		if seen[p.Name] {
			c.report(p.src, "metadata.name", "a second peer of this name: BGPPeers are cluster-scoped; only the first is converted")
			continue
		}
		seen[p.Name] = true
		if errs := validation.IsDNS1123Subdomain(p.Name); len(errs) > 0 {
			c.report(p.src, "metadata.name", fmt.Sprintf("%q is not a valid object name: peer not converted", p.Name))
			continue
		}
		if out := c.peer(p); out != nil {
			c.out.Peers = append(c.out.Peers, out)
		}
	}
}

func (c *converter) peer(p *bgpPeer) *v1alpha1.BGPPeer {
	s := p.Spec
	src := p.src
	switch {
	case s.Interface != "":
		c.report(src, "spec.interface", "unnumbered BGP (peering over an interface) is not supported: peer not converted")
		return nil
	case s.DynamicASN != "":
		c.report(src, "spec.dynamicASN", "IronLB needs the peer's ASN (peerASN): peer not converted")
		return nil
	case s.ASN == 0:
		c.report(src, "spec.peerASN", "missing: peer not converted")
		return nil
	case s.MyASN == 0:
		c.report(src, "spec.myASN", "missing: peer not converted")
		return nil
	}
	addr, err := netip.ParseAddr(s.Address)
	if err != nil {
		c.report(src, "spec.peerAddress", fmt.Sprintf("%q is not an IP address: peer not converted", s.Address))
		return nil
	}
	out := &v1alpha1.BGPPeer{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "BGPPeer"},
		ObjectMeta: metav1.ObjectMeta{Name: p.Name}}
	if c.peerLabelled[p.Name] {
		if errs := validation.IsValidLabelValue(p.Name); len(errs) > 0 {
			c.report(src, "metadata.name", "too long for the label "+PeerLabel+" that advertisements select it by: its advertisements go to no peer")
		} else {
			out.Labels = map[string]string{PeerLabel: p.Name}
		}
	}
	o := &out.Spec
	o.PeerAddress, o.PeerASN, o.MyASN = addr.String(), int64(s.ASN), int64(s.MyASN)
	if s.Port != 0 && s.Port != 179 {
		o.PeerPort = int32(s.Port)
	}
	if s.SrcAddress != "" {
		a, err := netip.ParseAddr(s.SrcAddress)
		if err != nil {
			c.report(src, "spec.sourceAddress", fmt.Sprintf("%q is not an IP address: left out", s.SrcAddress))
		} else {
			o.SourceAddress = a.String()
		}
	}
	o.RouterID = s.RouterID
	if s.LocalASN != 0 {
		c.report(src, "spec.localASN", "local-as (advertising another ASN to this peer) is not supported: IronLB uses myASN")
	}
	if s.VRFName != "" {
		c.report(src, "spec.vrf", "peering from a VRF is not supported: IronLB opens sessions in the node's default routing table")
	}
	if s.DisableMP {
		c.report(src, "spec.disableMP", "IronLB always carries IPv4 and IPv6 routes over one session (MP-BGP); separate sessions per family are not supported")
	}
	c.timers(p, o)
	if len(s.NodeSelectors) > 1 {
		c.report(src, "spec.nodeSelectors", fmt.Sprintf("%d selectors (any may match); IronLB's nodeSelector is one selector: only the first is kept", len(s.NodeSelectors)))
	}
	if len(s.NodeSelectors) > 0 {
		o.NodeSelector = &s.NodeSelectors[0]
	}
	ebgp := s.ASN != s.MyASN
	switch {
	case s.EBGPMultiHop && ebgp:
		o.EBGPMultihop = ptr.To(int32(255)) // FRR's "ebgp-multihop" without a TTL
	case s.EBGPMultiHop:
		c.note(src, "spec.ebgpMultiHop", "applies to eBGP only; this is an iBGP session (FRR ignores it too)")
	}
	c.password(p, out)
	c.usedBFD[s.BFDProfile] = true
	if s.BFDProfile != "" {
		c.bfd(p, o, ebgp)
	}
	if s.EnableGracefulRestart {
		o.GracefulRestart = &v1alpha1.BGPPeerGracefulRestart{Enabled: true} // restartTime 120s, FRR's default too
	}
	return out
}

func (c *converter) timers(p *bgpPeer, o *v1alpha1.BGPPeerSpec) {
	s, src := p.Spec, p.src
	if s.HoldTime != nil {
		switch h := s.HoldTime.Duration; {
		case h == 0:
			c.report(src, "spec.holdTime", "0s (no keepalives) is not supported by IronLB's speakers: the default 90s is used")
		case h < 3*time.Second || h > 65535*time.Second:
			c.report(src, "spec.holdTime", fmt.Sprintf("%s is outside 3s..65535s: the default 90s is used", h))
		default:
			o.HoldTime = &metav1.Duration{Duration: h.Truncate(time.Second)}
		}
	}
	if s.KeepaliveTime != nil {
		switch k := s.KeepaliveTime.Duration; {
		case k == 0 && o.HoldTime != nil:
			c.note(src, "spec.keepaliveTime", "0s: MetalLB (FRR) sends no keepalives; IronLB reads 0s as a third of holdTime: left out")
		case o.HoldTime != nil && k >= o.HoldTime.Duration:
			c.report(src, "spec.keepaliveTime", fmt.Sprintf("%s is not shorter than holdTime: left out (a third of holdTime)", k))
		case o.HoldTime == nil && k >= 90*time.Second:
			c.report(src, "spec.keepaliveTime", fmt.Sprintf("%s is not shorter than the hold time 90s: left out (30s)", k))
		case k > 0:
			o.KeepaliveTime = &metav1.Duration{Duration: k.Truncate(time.Second)}
		}
	}
	if s.ConnectTime != nil {
		if ct := s.ConnectTime.Duration; ct < time.Second || ct > time.Hour {
			c.report(src, "spec.connectTime", fmt.Sprintf("%s is outside IronLB's connectRetryTime range 1s..1h: the default 5s is used", ct))
		} else {
			o.ConnectRetryTime = &metav1.Duration{Duration: ct}
		}
	}
}

// password turns MetalLB's password (in clear) into a Secret of the
// output, and its passwordSecret into a reference to a Secret of that
// name that must be copied into IronLB's namespace.
func (c *converter) password(p *bgpPeer, out *v1alpha1.BGPPeer) {
	s, src := p.Spec, p.src
	switch {
	case s.Password != "" && s.PasswordSecret.Name != "":
		c.report(src, "spec.password", "both password and passwordSecret are set (MetalLB refuses that): only passwordSecret is converted")
		fallthrough
	case s.PasswordSecret.Name != "":
		out.Spec.PasswordSecretRef = &v1alpha1.SecretKeyRef{Name: s.PasswordSecret.Name, Key: "password"}
		ns := s.PasswordSecret.Namespace
		if ns == "" {
			ns = "metallb-system"
		}
		c.note(src, "spec.passwordSecret", fmt.Sprintf("copy Secret %s/%s (key password) into namespace %s as type %s, the only Secrets IronLB reads BGP passwords from", ns, s.PasswordSecret.Name, SecretNamespace, v1alpha1.BGPPasswordSecretType))
	case s.Password != "":
		name := p.Name + "-bgp-password"
		out.Spec.PasswordSecretRef = &v1alpha1.SecretKeyRef{Name: name, Key: "password"}
		c.out.Secrets = append(c.out.Secrets, &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SecretNamespace},
			Type:       v1alpha1.BGPPasswordSecretType,
			StringData: map[string]string{"password": s.Password},
		})
		c.note(src, "spec.password", fmt.Sprintf("written to Secret %s/%s of the output (the password is in clear there, as it was in the input)", SecretNamespace, name))
		if err := v1alpha1.CheckBGPPassword([]byte(s.Password)); err != nil {
			c.report(src, "spec.password", fmt.Sprintf("%v: IronLB will not use it (a BGP password is 1 to %d printable ASCII characters); change it on the router and in Secret %s/%s", err, v1alpha1.MaxBGPPasswordLength, SecretNamespace, name))
		}
	}
}

func (c *converter) bfd(p *bgpPeer, o *v1alpha1.BGPPeerSpec, ebgp bool) {
	src := p.src
	prof, ok := c.in.bfdProfiles[p.Spec.BFDProfile]
	if !ok {
		c.report(src, "spec.bfdProfile", fmt.Sprintf("BFDProfile %q is not in the input: BFD left off", p.Spec.BFDProfile))
		return
	}
	b := &v1alpha1.BGPPeerBFD{Enabled: true}
	ps := prof.Spec
	ms := func(field string, v *uint32) *metav1.Duration {
		if v == nil || *v == 300 {
			return nil
		}
		if *v < 10 || *v > 60000 {
			c.report(prof.src, field, fmt.Sprintf("%dms is outside 10ms..60s: the default 300ms is used", *v))
			return nil
		}
		return &metav1.Duration{Duration: time.Duration(*v) * time.Millisecond}
	}
	b.ReceiveInterval = ms("spec.receiveInterval", ps.ReceiveInterval)
	b.TransmitInterval = ms("spec.transmitInterval", ps.TransmitInterval)
	if m := ps.DetectMultiplier; m != nil && *m != 3 {
		if *m < 1 || *m > 255 {
			c.report(prof.src, "spec.detectMultiplier", fmt.Sprintf("%d is outside 1..255: the default 3 is used", *m))
		} else {
			b.DetectMultiplier = ptr.To(int32(*m))
		}
	}
	if ps.EchoMode != nil && *ps.EchoMode {
		c.report(prof.src, "spec.echoMode", "BFD echo mode is not supported: IronLB runs asynchronous mode only")
	}
	if ps.PassiveMode != nil && *ps.PassiveMode {
		c.report(prof.src, "spec.passiveMode", "passive BFD is not supported: IronLB's speakers always start the session")
	}
	if ps.MinimumTTL != nil && *ps.MinimumTTL != 254 {
		c.report(prof.src, "spec.minimumTtl", "not configurable: IronLB accepts single-hop BFD with TTL 255 only, multihop from any TTL")
	}
	if p.Spec.EBGPMultiHop && !ebgp {
		c.report(src, "spec.bfdProfile", "multihop BFD for an iBGP peer is not supported: IronLB runs single-hop BFD (the router must be directly connected)")
	}
	o.BFD = b
}
