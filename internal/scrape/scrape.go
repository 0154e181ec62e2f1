// Package scrape holds a metrics collector whose values are read at scrape
// time from the state of the object that set itself as the source last
// (one controller, planner or agent runs per process).
package scrape

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// Collector reports descs from its source function.
type Collector struct {
	metrics.BaseStableCollector
	descs []*metrics.Desc
	also  []metrics.Registerable
	once  sync.Once
	mu    sync.Mutex
	fn    func(ch chan<- metrics.Metric)
}

// New returns a Collector of descs. also are plain metrics (counters,
// histograms) registered together with it.
func New(descs []*metrics.Desc, also ...metrics.Registerable) *Collector {
	return &Collector{descs: descs, also: also}
}

// Set makes fn the source of the collector's metrics and registers the
// collector and its companions in the legacy registry (served at
// /metrics) on first use. fn may be nil: only the companions are then
// registered.
func (c *Collector) Set(fn func(ch chan<- metrics.Metric)) {
	c.once.Do(func() {
		legacyregistry.MustRegister(c.also...)
		legacyregistry.CustomMustRegister(c)
	})
	if fn == nil {
		return
	}
	c.mu.Lock()
	c.fn = fn
	c.mu.Unlock()
}

// DescribeWithStability implements metrics.StableCollector.
func (c *Collector) DescribeWithStability(ch chan<- *metrics.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// CollectWithStability implements metrics.StableCollector.
func (c *Collector) CollectWithStability(ch chan<- metrics.Metric) {
	c.mu.Lock()
	fn := c.fn
	c.mu.Unlock()
	if fn != nil {
		fn(ch)
	}
}

// Bool is 1 for true and 0 for false.
func Bool(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
