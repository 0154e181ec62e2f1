package speakerv1

// DefaultPort is the TCP port a speaker listens on for the CCM's Sync
// streams (ironlb-speaker's --port, the CCM's speakers.port), unless
// configured otherwise.
const DefaultPort = 7473
