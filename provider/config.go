package provider

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Config is the optional YAML file passed with --cloud-config. Unknown fields
// and invalid values are rejected when the CCM starts.
//
//	instances:
//	  defaultZone: rack-a
//	  defaultRegion: dc1
//	  defaultInstanceType: bare-metal
type Config struct {
	// Instances configures node initialization.
	Instances InstancesConfig `json:"instances,omitempty"`
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
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("invalid cloud config: %s", strings.Join(problems, "; "))
	}
	return nil
}
