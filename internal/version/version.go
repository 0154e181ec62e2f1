// Package version holds the build version of IronLB's binaries.
package version

import "regexp"

// Version is the release this binary was built from. The Makefile sets it
// with -ldflags "-X github.com/ironlb/ironlb/internal/version.Version=...".
var Version = "v0.0.0-dev"

// AppVersion is the release the install files name: the chart's appVersion
// (deploy/chart/ironlb/Chart.yaml), the tag deploy/kustomization.yaml pins
// the images to. TestAppVersionIsChart keeps the three equal.
const AppVersion = "v0.1.0"

// release matches a release's version: vX.Y.Z, or a pre-release such as
// vX.Y.Z-rc.1. It does not match git describe between releases
// (v0.1.0-12-g0123abc, -dirty) nor a bare commit.
var release = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-(alpha|beta|rc)\.[0-9]+)?$`)

// ImageTag returns the tag of the images that go with this binary:
// Version when it was built from a release, else AppVersion, the tag the
// install files of the source tree name (a development build has no
// published images of its own; make cluster-image tags local builds so).
func ImageTag() string {
	if release.MatchString(Version) {
		return Version
	}
	return AppVersion
}
