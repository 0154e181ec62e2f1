package metallb

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// WriteYAML writes the Result's objects as multi-document YAML, ready for
// `kubectl apply -f -`: in side-by-side mode MetalLB's frozen pools first
// (kubectl applies in order, so MetalLB stops handing out addresses
// before IronLB's pools exist), then password Secrets, IPPools, BGPPeers.
func (r *Result) WriteYAML(w io.Writer) error {
	var objs []any
	for _, o := range r.MetalLB {
		objs = append(objs, o)
	}
	for _, s := range r.Secrets {
		objs = append(objs, s)
	}
	for _, p := range r.Pools {
		objs = append(objs, p)
	}
	for _, p := range r.Peers {
		objs = append(objs, p)
	}
	for i, o := range objs {
		b, err := clean(o)
		if err != nil {
			return err
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// clean is o as YAML without status and empty creationTimestamp.
func clean(o any) ([]byte, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("writing YAML: %w", err)
	}
	return out, nil
}
