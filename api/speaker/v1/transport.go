package speakerv1

// StreamWindow is the HTTP/2 flow-control window, per stream and per
// connection, that both ends of a Sync stream set (the CCM's dial options,
// the speaker's server options). A fixed window turns gRPC's bandwidth-delay
// estimation off: with it, each message that arrives after a quiet spell
// sends a PING and waits for its ACK, so every heartbeat and every answer
// cost a ping exchange on top, twice the system calls of an idle stream.
// One MiB lets a full report of a node holding many VIPs through in one
// flight.
const StreamWindow = 1 << 20
