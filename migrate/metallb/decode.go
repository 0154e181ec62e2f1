package metallb

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Read parses multi-document YAML or JSON: MetalLB objects, Lists of them
// and the legacy ConfigMap (key "config"). Objects of other kinds are
// skipped with a note.
func Read(r io.Reader) (*Input, error) {
	in := &Input{bfdProfiles: map[string]*bfdProfile{}, communities: map[string]communityAlias{}}
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	for n := 1; ; n++ {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		if len(doc) == 0 {
			continue
		}
		if err := in.add(doc); err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
	}
	return in, nil
}

func (in *Input) add(doc map[string]any) error {
	apiVersion, _ := doc["apiVersion"].(string)
	kind, _ := doc["kind"].(string)
	meta, _ := doc["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	namespace, _ := meta["namespace"].(string)
	id := kind + " " + name
	if namespace != "" {
		id = kind + " " + namespace + "/" + name
	}
	if items, ok := doc["items"].([]any); ok && strings.HasSuffix(kind, "List") {
		for i, item := range items {
			m, ok := item.(map[string]any)
			if !ok {
				return fmt.Errorf("%s: items[%d] is not an object", kind, i)
			}
			if err := in.add(m); err != nil {
				return fmt.Errorf("%s: items[%d]: %w", kind, i, err)
			}
		}
		return nil
	}
	if apiVersion == "" && kind == "" && (doc["address-pools"] != nil || doc["peers"] != nil || doc["bfd-profiles"] != nil || doc["bgp-communities"] != nil) {
		// The legacy "config" text on its own, as in MetalLB's docs.
		b, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		return in.addLegacy(&legacyConfigMap{id: "legacy config"}, string(b))
	}
	if apiVersion == "v1" && kind == "ConfigMap" {
		data, _ := doc["data"].(map[string]any)
		cfg, ok := data["config"].(string)
		if !ok {
			in.reports = append(in.reports, Report{Object: id, Note: true, Message: "ConfigMap without a \"config\" key: not MetalLB's configuration, skipped"})
			return nil
		}
		return in.addLegacy(&legacyConfigMap{id: id, name: name, namespace: namespace,
			labels: stringMap(meta["labels"]), annotations: stringMap(meta["annotations"]), data: data}, cfg)
	}
	group, version, _ := strings.Cut(apiVersion, "/")
	if group != "metallb.io" {
		in.reports = append(in.reports, Report{Object: id, Note: true, Message: fmt.Sprintf("%s is not a MetalLB object: skipped", apiVersion)})
		return nil
	}
	if name == "" {
		return fmt.Errorf("%s without metadata.name", kind)
	}
	src := source{object: id}
	labels := stringMap(meta["labels"])
	if labels == nil {
		labels = map[string]string{}
	}
	spec, _ := doc["spec"].(map[string]any)
	var target any
	switch kind {
	case "IPAddressPool":
		p := &ipAddressPool{src: src, Name: name, Labels: labels, Namespace: namespace, Annotations: stringMap(meta["annotations"]), rawSpec: spec}
		in.pools, target = append(in.pools, p), &p.Spec
	case "L2Advertisement":
		a := &l2Advertisement{src: src, Name: name}
		in.l2Ads, target = append(in.l2Ads, a), &a.Spec
	case "BGPAdvertisement":
		a := &bgpAdvertisement{src: src, Name: name}
		in.bgpAds, target = append(in.bgpAds, a), &a.Spec
	case "BGPPeer":
		p := &bgpPeer{src: src, Name: name}
		in.peers, target = append(in.peers, p), &p.Spec
	case "BFDProfile":
		p := &bfdProfile{src: src, Name: name}
		in.bfdProfiles[name], target = p, &p.Spec
	case "Community":
		var c struct {
			Communities []struct {
				Name  string `json:"name"`
				Value string `json:"value"`
			} `json:"communities"`
		}
		if err := remarshal(spec, &c); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		for i, a := range c.Communities {
			in.communities[a.Name] = communityAlias{src: source{object: id + fmt.Sprintf(" (spec.communities[%d])", i)}, Value: a.Value}
		}
		return nil
	case "ServiceL2Status", "ServiceBGPStatus", "ConfigurationState":
		in.reports = append(in.reports, Report{Object: id, Note: true, Message: "status written by MetalLB, not configuration: skipped"})
		return nil
	default:
		in.reports = append(in.reports, Report{Object: id, Message: fmt.Sprintf("kind %s of %s is not known to the converter: not converted", kind, apiVersion)})
		return nil
	}
	if version != "v1beta1" && version != "v1beta2" {
		in.reports = append(in.reports, Report{Object: id, Note: true, Message: fmt.Sprintf("version %s read as v1beta1/v1beta2", version)})
	}
	if err := remarshal(spec, target); err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	for _, f := range unknownFields(spec, target, "spec") {
		in.reports = append(in.reports, Report{Object: id, Field: f, Message: "field not known to the converter: not converted"})
	}
	return nil
}

// stringMap is a metadata map (labels, annotations) of a generic object;
// nil when absent.
func stringMap(v any) map[string]string {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, x := range m {
		out[k], _ = x.(string)
	}
	return out
}

// remarshal decodes a generic map into a typed value.
func remarshal(from any, to any) error {
	if from == nil {
		return nil
	}
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, to)
}

var ownPkg = reflect.TypeOf(source{}).PkgPath()

// unknownFields lists the keys of m (recursively into nested structs) that
// the struct v has no field for.
func unknownFields(m map[string]any, v any, path string) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	known := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if tag != "" && tag != "-" {
			known[tag] = t.Field(i).Type
		}
	}
	var out []string
	for k, val := range m {
		ft, ok := known[k]
		if !ok {
			out = append(out, path+"."+k)
			continue
		}
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if sub, ok := val.(map[string]any); ok && ft.Kind() == reflect.Struct && ft.PkgPath() == ownPkg {
			out = append(out, unknownFields(sub, reflect.New(ft).Interface(), path+"."+k)...)
		}
	}
	sort.Strings(out)
	return out
}
