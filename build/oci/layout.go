package oci

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations of an index.json entry that name the image: the OCI one holds
// the tag (skopeo's oci:<dir>:<tag>), containerd's the full reference
// (ctr images import names the image after it).
const (
	AnnotationRefName        = "org.opencontainers.image.ref.name"
	AnnotationContainerdName = "io.containerd.image.name"
)

// WriteLayout writes idx as the OCI image layout dir (replacing whatever
// dir held), its index.json naming it ref (registry/repository:tag). The
// layout is written next to dir and renamed into place, so dir is either
// the old layout or the whole new one.
func WriteLayout(dir string, idx v1.ImageIndex, ref string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image layout %s: reference %q: %w", dir, ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("image layout %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".")
	if err != nil {
		return fmt.Errorf("image layout %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("image layout %s: %w", dir, err)
	}
	err = p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		AnnotationRefName:        tag.TagStr(),
		AnnotationContainerdName: tag.Name(),
	}))
	if err != nil {
		return fmt.Errorf("image layout %s: writing %s: %w", dir, ref, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes it 0700
		return fmt.Errorf("image layout %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("image layout %s: removing the old one: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("image layout %s: %w", dir, err)
	}
	return nil
}

// ReadLayout returns the image index that the OCI image layout dir holds,
// as WriteLayout wrote it: its index.json lists exactly one entry, an image
// index.
func ReadLayout(dir string) (v1.ImageIndex, error) {
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading image layout %s: %w", dir, err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading image layout %s: %w", dir, err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].MediaType != types.OCIImageIndex {
		var kinds []types.MediaType
		for _, d := range m.Manifests {
			kinds = append(kinds, d.MediaType)
		}
		return nil, fmt.Errorf("image layout %s: index.json lists %v, want one %s", dir, kinds, types.OCIImageIndex)
	}
	idx, err := top.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		return nil, fmt.Errorf("reading image layout %s: %w", dir, err)
	}
	return idx, nil
}
