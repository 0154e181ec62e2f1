// Package oci assembles IronLB's container images without a container
// engine: one static binary on an empty base (no shell, no libc, no CA
// certificates: the binaries talk only to the API server, whose CA comes
// with the ServiceAccount, and to each other with IronLB's own CA), one
// image per platform under an OCI image index. The images are
// reproducible: the same binaries and Request give the same digests.
// Index builds them; WriteLayout, ReadLayout and Push move them.
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The OCI annotation and label keys the images carry
// (https://github.com/opencontainers/image-spec/blob/main/annotations.md).
const (
	LabelSource   = "org.opencontainers.image.source"
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelTitle    = "org.opencontainers.image.title"
	LabelLicenses = "org.opencontainers.image.licenses"
)

// Binary is the executable of one platform.
type Binary struct {
	// Platform is the binary's OS and architecture (variant when it has one).
	Platform v1.Platform
	// Path is the binary on this machine.
	Path string
}

// Request describes the image of one program for several platforms.
type Request struct {
	// Name is the program's name: the image holds the binary as /Name and
	// runs it as its entrypoint; it is also the image's title.
	Name string
	// Binaries holds one binary per platform, in the order of the index.
	Binaries []Binary
	// User is who the entrypoint runs as: a numeric "uid" or "uid:gid".
	// The base is empty, so there is no /etc/passwd to look names up in.
	User string
	// Created is the creation time recorded in the image configuration and
	// the modification time of the binary in the layer: a fixed time (the
	// commit's) makes the image reproducible.
	Created time.Time
	// Source (a repository URL), Version, Revision (the commit) and
	// Licenses (an SPDX expression) are recorded as OCI labels on each
	// image and annotations on the index; empty ones are left out.
	Source, Version, Revision, Licenses string
}

// numericUser is a numeric uid, optionally with a numeric gid.
var numericUser = regexp.MustCompile(`^[0-9]+(:[0-9]+)?$`)

// Labels returns the OCI labels of the request's images: source, version,
// revision, title (the program's name) and, when set, licenses.
func (r Request) Labels() map[string]string {
	labels := map[string]string{LabelTitle: r.Name}
	for k, v := range map[string]string{
		LabelSource:   r.Source,
		LabelVersion:  r.Version,
		LabelRevision: r.Revision,
		LabelLicenses: r.Licenses,
	} {
		if v != "" {
			labels[k] = v
		}
	}
	return labels
}

// check returns what is wrong with r, if anything.
func (r Request) check() error {
	switch {
	case r.Name == "" || strings.ContainsAny(r.Name, "/\\") || r.Name == "." || r.Name == "..":
		return fmt.Errorf("program name %q: want a file name", r.Name)
	case len(r.Binaries) == 0:
		return fmt.Errorf("%s: no binaries", r.Name)
	case !numericUser.MatchString(r.User):
		return fmt.Errorf("%s: user %q: want a numeric uid or uid:gid (the base image has no /etc/passwd)", r.Name, r.User)
	case r.Created.IsZero():
		return fmt.Errorf("%s: no creation time (it makes the image reproducible)", r.Name)
	}
	seen := map[string]bool{}
	for _, b := range r.Binaries {
		p := b.Platform.String()
		if b.Platform.OS == "" || b.Platform.Architecture == "" {
			return fmt.Errorf("%s: binary %s: platform %q lacks an OS or architecture", r.Name, b.Path, p)
		}
		if seen[p] {
			return fmt.Errorf("%s: two binaries for %s", r.Name, p)
		}
		seen[p] = true
	}
	return nil
}

// Index builds the image index of r: for each binary, an OCI image of that
// platform holding it as /<Name> (mode 0755, owned by root, modification
// time r.Created) in a single layer on an empty base, with entrypoint
// /<Name>, user r.User and r.Labels(). The index carries the labels as
// annotations too (registries such as ghcr.io read the source from there).
func Index(r Request) (v1.ImageIndex, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	labels := r.Labels()
	var adds []mutate.IndexAddendum
	for _, b := range r.Binaries {
		img, err := image(r, b, labels)
		if err != nil {
			return nil, fmt.Errorf("image %s for %s: %w", r.Name, b.Platform.String(), err)
		}
		p := b.Platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	annotated, ok := mutate.Annotations(idx, labels).(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("index of %s: annotating returned no index", r.Name)
	}
	// Compute now, so that errors surface here rather than in a write.
	if _, err := annotated.Digest(); err != nil {
		return nil, fmt.Errorf("index of %s: %w", r.Name, err)
	}
	return annotated, nil
}

// image builds the image of one binary.
func image(r Request, b Binary, labels map[string]string) (v1.Image, error) {
	layer, err := binaryLayer(b.Path, r.Name, r.Created)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: r.Created.UTC().Truncate(time.Second)}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   created,
			CreatedBy: "build/mkimage: /" + r.Name,
			Comment:   "static binary on an empty base",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("adding the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the configuration: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS = b.Platform.OS
	cf.Architecture = b.Platform.Architecture
	cf.Variant = b.Platform.Variant
	cf.OSVersion = b.Platform.OSVersion
	cf.Config = v1.Config{
		User:       r.User,
		Entrypoint: []string{"/" + r.Name},
		Labels:     maps.Clone(labels),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting the configuration: %w", err)
	}
	return img, nil
}

// binaryLayer returns a gzip-compressed layer holding the file at path as
// /name, executable by all, owned by root, with modification time mtime and
// no other metadata: its bytes depend only on the file's content, name and
// mtime.
func binaryLayer(path, name string, mtime time.Time) (v1.Layer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening the binary: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening the binary: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("binary %s is not a regular file", path)
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression) // no name, no mtime in the gzip header
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     0o755,
		Size:     st.Size(),
		ModTime:  mtime.UTC().Truncate(time.Second),
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("writing the layer: %w", err)
	}
	if n, err := io.Copy(tw, f); err != nil {
		return nil, fmt.Errorf("writing the layer: %w", err)
	} else if n != st.Size() {
		return nil, fmt.Errorf("writing the layer: %s changed size while read", path)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing the layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("writing the layer: %w", err)
	}
	gz := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("making the layer: %w", err)
	}
	return layer, nil
}
