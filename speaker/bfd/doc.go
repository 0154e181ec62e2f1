// Package bfd is an embedded Bidirectional Forwarding Detection (BFD)
// implementation for the IronLB speaker: RFC 5880 in asynchronous mode, over
// UDP as described by RFC 5881 (single hop, destination port 3784) and RFC
// 5883 (multihop, destination port 4784), for IPv4 and IPv6.
//
// A Server keeps the sessions it is given by Configure. Each session sends
// BFD Control packets from its own socket (a source port in 49152–65535, TTL
// or hop limit 255) and receives through one shared listener per address
// family and port, opened on first need. Single-hop packets are accepted only
// with TTL 255 (the GTSM check of RFC 5881 §5); multihop packets with a TTL of
// at least 256-MaxHops.
//
// Supported: the AdminDown/Down/Init/Up state machine of RFC 5880 §6.8.6,
// random discriminators, Poll/Final sequences when timers change (without
// taking the session down), jitter (§6.8.7), slow transmission (at least one
// second) while a session is not Up (§6.8.3), and AdminDown on removal and
// graceful shutdown. Not supported: authentication (packets with the A bit
// are discarded), Demand mode and the Echo function (Required Min Echo RX
// Interval is advertised as 0). The Control Plane Independent bit is sent as
// 0: this BFD runs inside the speaker process and shares its fate.
//
// The protocol logic (packet encoding, reception, timers) is in pure code that
// takes the current time as an argument; the Server adds sockets, timers and
// locking around it.
package bfd
