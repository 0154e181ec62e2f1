package speaker

// Applying to the BGP side. Every call into it (a.bgp: Apply here,
// Sessions in pollBGP, Stop in Close and Restart) is made with a.mu
// released, so that heartbeats, reports, /bgp and claims never wait for
// gobgp (up to bgpTimeout). The pattern is the one of perform/recordLocked
// (execute.go): under a.mu take what the call needs (desiredBGPLocked: a
// copy or patch of the exports, the set-up, the exports' generation),
// release it, call, then re-take a.mu to record the result
// (recordBGPLocked). Nothing the call was built from can change in
// between: every writer of a.bgpCfg, a.exports and a.bgpErr (applies,
// retryFailed, pollBGP, Close) holds a.applyMu throughout, as do the
// callers of applyBGP. recordBGPLocked checks it anyway: it marks applied
// only the export changes up to d.gen (later ones stay pending), and an
// apply built from a set-up or export index that has since been replaced
// counts as failed, so that the next pass of Run applies the full table
// again.

import (
	"context"
	"errors"
)

// errBGPStale is recorded for an apply whose Desired no longer matches
// the agent's state when its result comes back (see recordBGPLocked).
var errBGPStale = errors.New("the BGP set-up or exports changed while they were applied; applying again")

// applyBGP brings the BGP side to d (or keeps err, d's error). The caller
// holds a.applyMu, not a.mu.
func (a *Agent) applyBGP(d bgpDesired, err error) error {
	if a.bgp == nil {
		return nil
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), bgpTimeout)
		err = a.bgp.Apply(ctx, d.Desired)
		cancel()
	}
	return err
}

// recordBGPLocked keeps the result of applyBGP (reported with the
// sessions until a later pass of Run succeeds); a.mu is held.
func (a *Agent) recordBGPLocked(d bgpDesired, err error) {
	if a.bgp == nil {
		return
	}
	if err == nil && (d.cfg != a.bgpCfg || d.index != a.exports) {
		err = errBGPStale // cannot happen while applyMu is held; see above
	}
	if err == nil {
		a.exports.applied(d.gen)
	}
	if (err == nil) != (a.bgpErr == nil) || err != nil && err.Error() != a.bgpErr.Error() {
		if err != nil {
			a.log.Error(err, "Cannot apply the BGP set-up; retrying")
		} else {
			a.log.Info("BGP set-up applied", "peers", len(d.Peers), "routes", len(d.Exports))
		}
		a.notifyLocked()
	}
	a.bgpErr = err
}
