package bgp

import (
	"sort"

	"github.com/go-logr/logr"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logAdapter sends gobgp's log through the speaker's logger: errors and
// warnings as they are, info at V(2) and debug at V(4) (gobgp is chatty).
// It also hands every message about a peer to onPeer, which is how the
// Router learns why a session fails: gobgp's API does not say.
type logAdapter struct {
	log    logr.Logger
	onPeer func(msg string, f gobgplog.Fields)
}

var _ gobgplog.Logger = logAdapter{}

func newLogAdapter(l logr.Logger, onPeer func(string, gobgplog.Fields)) logAdapter {
	return logAdapter{log: l.WithName("gobgp"), onPeer: onPeer}
}

func (a logAdapter) peer(msg string, f gobgplog.Fields) {
	if a.onPeer != nil && f["Topic"] == "Peer" {
		a.onPeer(msg, f)
	}
}

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

func (a logAdapter) Error(msg string, f gobgplog.Fields) {
	a.peer(msg, f)
	a.log.Error(nil, msg, keysAndValues(f)...)
}

func (a logAdapter) Warn(msg string, f gobgplog.Fields) {
	a.peer(msg, f)
	a.log.Info(msg, keysAndValues(f)...)
}

func (a logAdapter) Info(msg string, f gobgplog.Fields) {
	a.peer(msg, f)
	a.log.V(2).Info(msg, keysAndValues(f)...)
}

func (a logAdapter) Debug(msg string, f gobgplog.Fields) {
	a.peer(msg, f)
	if a.log.V(4).Enabled() {
		a.log.V(4).Info(msg, keysAndValues(f)...)
	}
}

// SetLevel is a no-op: the speaker's -v flag sets the level.
func (a logAdapter) SetLevel(gobgplog.LogLevel) {}

// GetLevel is always debug: gobgp says why a connection failed only at
// that level (the speaker's -v flag decides what is printed).
func (a logAdapter) GetLevel() gobgplog.LogLevel { return gobgplog.DebugLevel }
