// Package version holds the build version of IronLB's binaries.
package version

// Version is the release this binary was built from. The Makefile sets it
// with -ldflags "-X github.com/ironlb/ironlb/internal/version.Version=...".
var Version = "v0.0.0-dev"
