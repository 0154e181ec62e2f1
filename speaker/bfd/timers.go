package bfd

import "time"

// slowTxInterval is the least Desired Min TX Interval while a session is not
// Up (RFC 5880 §6.8.3).
const slowTxInterval = time.Second

// minInterval and maxInterval bound the configurable intervals: 10ms is the
// fastest the Server is meant to run, and the wire holds microseconds in 32
// bits.
const (
	minInterval = 10 * time.Millisecond
	maxInterval = (1<<32 - 1) * time.Microsecond
)

// advertisedTx is the Desired Min TX Interval to advertise for the configured
// value in state st: at least one second while not Up (RFC 5880 §6.8.3).
func advertisedTx(configured time.Duration, st State) time.Duration {
	if st != Up && configured < slowTxInterval {
		return slowTxInterval
	}
	return configured
}

// txInterval is the periodic transmission interval before jitter (RFC 5880
// §6.8.7): the larger of our Desired Min TX and the remote's Required Min RX,
// or 0 (no periodic transmission) when the remote asks for none.
func txInterval(localDesiredTx, remoteMinRx time.Duration) time.Duration {
	if remoteMinRx <= 0 {
		return 0
	}
	return max(localDesiredTx, remoteMinRx)
}

// detectTime is the asynchronous-mode Detection Time (RFC 5880 §6.8.4): the
// remote's Detect Mult times the larger of our Required Min RX and the
// remote's Desired Min TX. It is 0 when the remote is unknown.
func detectTime(remoteMult uint8, localRequiredRx, remoteDesiredTx time.Duration) time.Duration {
	if remoteMult == 0 {
		return 0
	}
	return time.Duration(remoteMult) * max(localRequiredRx, remoteDesiredTx)
}

// jitter applies the RFC 5880 §6.8.7 jitter to interval: a reduction by 0–25%,
// or by 10–25% when the local Detect Mult is 1. r is a random number in
// [0, 1).
func jitter(interval time.Duration, detectMult uint8, r float64) time.Duration {
	lo, hi := 0.75, 1.0
	if detectMult == 1 {
		hi = 0.90
	}
	return time.Duration(float64(interval) * (hi - (hi-lo)*r))
}
