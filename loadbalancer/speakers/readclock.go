package speakers

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// readClock is a stream's connection that notes when it last read bytes
// from the speaker: the earliest sign that the speaker spoke, before the
// CCM has decoded and taken in what it said. A CCM busy taking in large
// reports (or waiting for its own lock) may take in a heartbeat's answer
// late; the answer's bytes arrived on time all the same, and the watchdog
// counts silence from them (see watchdog.silentLocked).
type readClock struct {
	net.Conn
	last *atomic.Int64 // Unix nanoseconds of the latest read of at least one byte
}

func (c readClock) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// clockedDialer is dial (nil: a plain TCP dial) with its connections'
// reads noted in last.
func clockedDialer(dial func(ctx context.Context, addr string) (net.Conn, error), last *atomic.Int64) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var (
			c   net.Conn
			err error
		)
		if dial != nil {
			c, err = dial(ctx, addr)
		} else {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", addr)
		}
		if err != nil {
			return nil, err
		}
		return readClock{Conn: c, last: last}, nil
	}
}
