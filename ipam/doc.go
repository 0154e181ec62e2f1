// Package ipam holds IronLB's address pools and the allocator that hands
// their addresses to Services. Its core uses no Kubernetes types.
package ipam
