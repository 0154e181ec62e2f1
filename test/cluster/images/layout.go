package images

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Annotations of an index.json entry that name an image: containerd's
// (ctr images import names the image after it) and OCI's tag.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// Cached returns the OCI image layout of img under cacheDir, building it
// only if no layout of the same Key is there.
func Cached(cacheDir string, img Image) (string, error) {
	key, err := img.Key()
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.Ref, err)
	}
	ref, err := name.NewTag(img.Ref)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.Ref, err)
	}
	safe := strings.NewReplacer("/", "_", ":", "_").Replace(ref.Context().RepositoryStr() + "_" + ref.TagStr())
	dir := filepath.Join(cacheDir, safe+"-"+key)
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
		return dir, nil
	}
	// Older builds of the same image go.
	old, _ := filepath.Glob(filepath.Join(cacheDir, safe+"-*"))
	for _, o := range old {
		_ = os.RemoveAll(o)
	}
	built, err := img.Build()
	if err != nil {
		return "", err
	}
	// A folder of its own: another process may build the same image.
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.Ref, err)
	}
	err = p.AppendImage(built, layout.WithAnnotations(map[string]string{
		annotationContainerdName: ref.Name(),
		annotationRefName:        ref.TagStr(),
	}))
	if err != nil {
		return "", fmt.Errorf("image %s: writing the layout: %w", img.Ref, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "index.json")); serr == nil {
			return dir, nil // the other process was first
		}
		return "", err
	}
	return dir, nil
}

// Archive writes the OCI image layout dir as a tar stream, the form `ctr
// images import` reads.
func Archive(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("archiving %s: %w", dir, err)
	}
	return tw.Close()
}
