// Package dhcp is a DHCPv4 client that leases addresses for "virtual
// clients": a speaker leases a Service's VIP from the LAN's DHCP server on
// behalf of the Service, not for the node it runs on.
//
// A virtual client is identified by its client identifier (option 61),
// stable per Service, and by a hardware address (chaddr) derived from it
// (see HardwareAddr), so that the server sees the same client whichever
// node performs the exchange. Every message sets the BOOTP broadcast flag,
// so every reply is broadcast on the LAN and reaches whichever node asks,
// though the leased address is not an address of that node.
//
// The Client sends and receives through an AF_PACKET socket (see Listen)
// and never binds UDP port 68, so the node's own DHCP client may run on the
// same interface. One Client serves many concurrent exchanges on one
// interface; replies are told apart by their transaction id (xid).
//
// Everything read from the LAN is treated as hostile: packets and DHCP
// messages are parsed strictly and bounded, and malformed ones dropped.
package dhcp
