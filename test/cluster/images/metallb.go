package images

import "path/filepath"

// MetalLBControllerRef and MetalLBSpeakerRef are MetalLB's images as its
// metallb-native.yaml names them, for version (v0.16.2).
func MetalLBControllerRef(version string) string { return "quay.io/metallb/controller:" + version }

// MetalLBSpeakerRef is MetalLB's speaker image (see MetalLBControllerRef).
func MetalLBSpeakerRef(version string) string { return "quay.io/metallb/speaker:" + version }

// MetalLB returns MetalLB's controller and speaker images, as its
// Dockerfiles make them on distroless/static: the static binary at
// /controller or /speaker, its entrypoint. bin holds the binaries
// (cluster.BuildMetalLB); the speaker's frr-k8s tools (frr-metrics,
// cp-tool), which only the FRR modes run, are left out.
func MetalLB(bin, version string) []Image {
	var out []Image
	for _, prog := range []struct{ name, ref string }{
		{"controller", MetalLBControllerRef(version)},
		{"speaker", MetalLBSpeakerRef(version)},
	} {
		out = append(out, Image{
			Ref:        prog.ref,
			Files:      append(base(), File{Path: "/" + prog.name, Source: filepath.Join(bin, prog.name), Mode: 0o755}),
			Entrypoint: []string{"/" + prog.name},
			Env:        []string{pathEnv},
		})
	}
	return out
}
