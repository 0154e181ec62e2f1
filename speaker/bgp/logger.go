package bgp

import (
	"sort"

	"github.com/go-logr/logr"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logAdapter sends gobgp's log through the speaker's logger: errors and
// warnings as they are, info at V(2) and debug at V(4) (gobgp is chatty).
type logAdapter struct {
	log logr.Logger
}

var _ gobgplog.Logger = logAdapter{}

func newLogAdapter(l logr.Logger) logAdapter { return logAdapter{log: l.WithName("gobgp")} }

func keysAndValues(f gobgplog.Fields) []any {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kv := make([]any, 0, 2*len(f))
	for _, k := range keys {
		kv = append(kv, k, f[k])
	}
	return kv
}

func (a logAdapter) Panic(msg string, f gobgplog.Fields) {
	a.log.Error(nil, msg, keysAndValues(f)...)
	panic(msg)
}

func (a logAdapter) Fatal(msg string, f gobgplog.Fields) {
	// gobgp calls Fatal for conditions it cannot go on from; the speaker
	// must not exit silently, nor keep running with a dead server.
	a.log.Error(nil, msg, keysAndValues(f)...)
	panic(msg)
}

func (a logAdapter) Error(msg string, f gobgplog.Fields) { a.log.Error(nil, msg, keysAndValues(f)...) }
func (a logAdapter) Warn(msg string, f gobgplog.Fields)  { a.log.Info(msg, keysAndValues(f)...) }
func (a logAdapter) Info(msg string, f gobgplog.Fields)  { a.log.V(2).Info(msg, keysAndValues(f)...) }
func (a logAdapter) Debug(msg string, f gobgplog.Fields) { a.log.V(4).Info(msg, keysAndValues(f)...) }

// SetLevel is a no-op: the speaker's -v flag sets the level.
func (a logAdapter) SetLevel(gobgplog.LogLevel) {}

// GetLevel tells gobgp how much to compute for logging.
func (a logAdapter) GetLevel() gobgplog.LogLevel {
	switch {
	case a.log.V(4).Enabled():
		return gobgplog.DebugLevel
	case a.log.V(2).Enabled():
		return gobgplog.InfoLevel
	}
	return gobgplog.WarnLevel
}
