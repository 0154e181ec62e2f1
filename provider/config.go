package provider

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/loadbalancer/lbclass"
)

// Config is the optional YAML file passed with --cloud-config. Unknown fields
// and invalid values are rejected when the CCM starts.
//
//	instances:
//	  defaultZone: rack-a
//	  defaultRegion: dc1
//	  defaultInstanceType: bare-metal
//	speakers:
//	  port: 7473
//	  heartbeatInterval: 75ms
//	  heartbeatMisses: 3
//	  heartbeatRate: 2000
//	  restartGrace: 30s
//	  settleWindow: 5s
//	  localRebalanceDelay: 30s
//	  secretNamespace: ironlb-system
//	controlPlane:
//	  vips: [192.0.2.250]
//	loadBalancerClass:
//	  name: ironlb.dev/ironlb
//	  only: false
//
// controlPlane.vips are the cluster's control-plane VIPs (the
// kube-apiserver's own address, kubeadm's --control-plane-endpoint),
// IP addresses, at most 4, each once: IronLB never gives them to a
// Service. An IPPool that covers one hands out everything else and gets a
// Warning Event; a Service that asks for one stays pending with a Warning
// Event; a Service that held one (in its status, from before) loses it
// with a Warning Event. IronLB also reserves, without being told, the
// controlPlaneEndpoint of kube-system/kubeadm-config when its host is an
// IP address; list the VIP here when that endpoint is a DNS name or the
// cluster was not built with kubeadm.
//
// loadBalancerClass.name is the spec.loadBalancerClass whose Services
// IronLB serves (default ironlb.dev/ironlb; a qualified name, as the API
// server requires of the field), besides the Services without a class;
// with loadBalancerClass.only IronLB serves only that class and leaves
// class-less Services to another implementation (it does not run the
// service controller then). Services of any other class are never touched.
type Config struct {
	// Instances configures node initialization.
	Instances InstancesConfig `json:"instances,omitempty"`
	// Speakers configures the control channel to the node speakers.
	Speakers SpeakersConfig `json:"speakers,omitempty"`
	// ControlPlane names the control-plane VIPs, never given to Services.
	ControlPlane ControlPlaneConfig `json:"controlPlane,omitempty"`
	// LoadBalancerClass says which Services IronLB serves.
	LoadBalancerClass LoadBalancerClassConfig `json:"loadBalancerClass,omitempty"`
}

// LoadBalancerClassConfig says which Services IronLB serves by their
// spec.loadBalancerClass.
type LoadBalancerClassConfig struct {
	// Name is IronLB's class (default ironlb.dev/ironlb).
	Name string `json:"name,omitempty"`
	// Only makes IronLB serve only Services of class Name.
	Only bool `json:"only,omitempty"`
}

// Policy returns the class policy the load balancer follows.
func (c LoadBalancerClassConfig) Policy() lbclass.Policy {
	return lbclass.Policy{Name: c.Name, Only: c.Only}
}

// ControlPlaneConfig names the cluster's control-plane VIPs.
type ControlPlaneConfig struct {
	// VIPs are the kube-apiserver's VIPs: IPv4 or IPv6 addresses, at most
	// maxControlPlaneVIPs, no duplicates.
	VIPs []string `json:"vips,omitempty"`
}

// maxControlPlaneVIPs bounds controlPlane.vips: one per family, and room
// for a move from one VIP to another.
const maxControlPlaneVIPs = 4

// Addresses returns the VIPs as addresses; call it on a validated
// Config (it skips what does not parse).
func (c ControlPlaneConfig) Addresses() []netip.Addr {
	var out []netip.Addr
	for _, s := range c.VIPs {
		if a, err := parseVIP(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// parseVIP parses a control-plane VIP: a plain IPv4 or IPv6 address
// (no zone, not IPv4-mapped) that a host could hold.
func parseVIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, errors.New("not an IP address")
	case a.Zone() != "":
		return a, errors.New("an address with a zone")
	case a.Is4In6():
		return a, errors.New("an IPv4-mapped IPv6 address (write the IPv4 address)")
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast():
		return a, errors.New("not a unicast address a host can serve (unspecified, loopback, multicast or link-local)")
	}
	return a, nil
}

func (c ControlPlaneConfig) problems() []string {
	var problems []string
	if len(c.VIPs) > maxControlPlaneVIPs {
		problems = append(problems, fmt.Sprintf("controlPlane.vips: %d addresses, at most %d", len(c.VIPs), maxControlPlaneVIPs))
	}
	seen := map[netip.Addr]bool{}
	for _, s := range c.VIPs {
		a, err := parseVIP(s)
		if err != nil {
			problems = append(problems, fmt.Sprintf("controlPlane.vips %q: %v", s, err))
			continue
		}
		if seen[a] {
			problems = append(problems, fmt.Sprintf("controlPlane.vips %q: listed twice", s))
		}
		seen[a] = true
	}
	return problems
}

// SpeakersConfig configures how the CCM leader reaches the speakers.
type SpeakersConfig struct {
	// Port the speakers listen on (default 7473).
	Port int `json:"port,omitempty"`
	// HeartbeatInterval between heartbeats on each stream (default 75ms).
	HeartbeatInterval metav1.Duration `json:"heartbeatInterval,omitempty"`
	// HeartbeatMisses is how many intervals a speaker may stay silent
	// before its VIPs move (default 3: a lost node is detected after
	// 225 ms of silence).
	HeartbeatMisses int `json:"heartbeatMisses,omitempty"`
	// HeartbeatRate bounds the heartbeats per second the CCM sends,
	// summed over all speakers (default 2000). With more speakers than
	// it allows at heartbeatInterval (150 at the defaults), every stream
	// gets the smallest multiple of heartbeatInterval that stays within
	// it, and a silent node is detected after that × heartbeatMisses
	// (1.6 s at 1,000 nodes): the idle CCM's CPU then stays flat as
	// nodes are added.
	HeartbeatRate int `json:"heartbeatRate,omitempty"`
	// RestartGrace is how long the VIPs of a speaker that said it is
	// restarting stay on its node while its host refuses connections
	// (default 30s).
	RestartGrace metav1.Duration `json:"restartGrace,omitempty"`
	// SettleWindow is how long VIPs stay on their speakers when most
	// speakers are lost at once (likely the CCM's own network), before
	// those still lost lose their VIPs (default 5s).
	SettleWindow metav1.Duration `json:"settleWindow,omitempty"`
	// LocalRebalanceDelay is how long another node must have had more
	// ready endpoints than the node announcing a layer-2 VIP of
	// externalTrafficPolicy: Local Services before the VIP moves there
	// (default 30s; negative: never).
	LocalRebalanceDelay metav1.Duration `json:"localRebalanceDelay,omitempty"`
	// SecretNamespace holds the ironlb-ca Secret, the ironlb-ca-bundle
	// ConfigMap and the speakers' ServiceAccount
	// (default: $POD_NAMESPACE, else ironlb-system).
	SecretNamespace string `json:"secretNamespace,omitempty"`
}

// InstancesConfig sets node metadata for nodes that do not carry it as
// labels already. A node's own well-known labels always win.
type InstancesConfig struct {
	// DefaultInstanceType becomes node.kubernetes.io/instance-type.
	DefaultInstanceType string `json:"defaultInstanceType,omitempty"`
	// DefaultZone becomes topology.kubernetes.io/zone.
	DefaultZone string `json:"defaultZone,omitempty"`
	// DefaultRegion becomes topology.kubernetes.io/region.
	DefaultRegion string `json:"defaultRegion,omitempty"`
}

// ParseConfig reads and validates a cloud config. A nil reader (no
// --cloud-config flag) yields the defaults.
func ParseConfig(r io.Reader) (Config, error) {
	var cfg Config
	if r == nil {
		return cfg, nil
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return cfg, fmt.Errorf("reading cloud config: %w", err)
	}
	jsonData, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return cfg, fmt.Errorf("parsing cloud config: %w", err)
	}
	strictErrs, err := kjson.UnmarshalStrict(jsonData, &cfg, kjson.DisallowUnknownFields)
	if err != nil {
		return cfg, fmt.Errorf("parsing cloud config: %w", err)
	}
	if len(strictErrs) > 0 {
		return cfg, fmt.Errorf("parsing cloud config: %w", errors.Join(strictErrs...))
	}
	return cfg, cfg.Validate()
}

// Validate checks every field and reports all problems at once.
func (c Config) Validate() error {
	var problems []string
	for field, value := range map[string]string{
		"instances.defaultInstanceType": c.Instances.DefaultInstanceType,
		"instances.defaultZone":         c.Instances.DefaultZone,
		"instances.defaultRegion":       c.Instances.DefaultRegion,
	} {
		for _, msg := range validation.IsValidLabelValue(value) {
			problems = append(problems, fmt.Sprintf("%s %q: %s", field, value, msg))
		}
	}
	sp := c.Speakers
	if sp.Port < 0 || sp.Port > 65535 {
		problems = append(problems, fmt.Sprintf("speakers.port %d: must be between 1 and 65535", sp.Port))
	}
	if d := sp.HeartbeatInterval.Duration; d < 0 || (d > 0 && d < 10*time.Millisecond) || d > time.Minute {
		problems = append(problems, fmt.Sprintf("speakers.heartbeatInterval %s: must be between 10ms and 1m", d))
	}
	if d := sp.RestartGrace.Duration; d < 0 || (d > 0 && d < time.Second) || d > 10*time.Minute {
		problems = append(problems, fmt.Sprintf("speakers.restartGrace %s: must be between 1s and 10m", d))
	}
	if sp.HeartbeatMisses < 0 || sp.HeartbeatMisses > 100 {
		problems = append(problems, fmt.Sprintf("speakers.heartbeatMisses %d: must be between 1 and 100", sp.HeartbeatMisses))
	}
	if sp.HeartbeatRate < 0 || sp.HeartbeatRate > 1_000_000 {
		problems = append(problems, fmt.Sprintf("speakers.heartbeatRate %d: must be between 1 and 1000000 heartbeats per second", sp.HeartbeatRate))
	}
	if d := sp.SettleWindow.Duration; d < 0 || (d > 0 && d < 100*time.Millisecond) || d > 10*time.Minute {
		problems = append(problems, fmt.Sprintf("speakers.settleWindow %s: must be between 100ms and 10m", d))
	}
	if d := sp.LocalRebalanceDelay.Duration; d > 0 && (d < time.Second || d > time.Hour) {
		problems = append(problems, fmt.Sprintf("speakers.localRebalanceDelay %s: must be between 1s and 1h (or negative: never)", d))
	}
	if ns := sp.SecretNamespace; ns != "" {
		for _, msg := range validation.IsDNS1123Label(ns) {
			problems = append(problems, fmt.Sprintf("speakers.secretNamespace %q: %s", ns, msg))
		}
	}
	problems = append(problems, c.ControlPlane.problems()...)
	if err := c.LoadBalancerClass.Policy().Validate(); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("invalid cloud config: %s", strings.Join(problems, "; "))
	}
	return nil
}
