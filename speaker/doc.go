// Package speaker is IronLB's node agent: it receives the virtual IPs
// assigned to its node from the CCM and announces them.
package speaker
