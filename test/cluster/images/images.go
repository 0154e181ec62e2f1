// Package images builds the container images a real cluster on this
// machine needs and cannot pull: Kubernetes' control-plane images and
// kube-proxy's, etcd, CoreDNS, the pod sandbox (pause) and the e2e suite's
// agnhost, named exactly as kubeadm and the e2e framework expect. Each is
// one layer holding static Go binaries built from the Go module proxy and,
// where the programs run other tools (kube-proxy runs nft; e2e tests exec
// sh, wget, nc and curl in agnhost pods), those tools as this machine's
// Debian packages installed them, with the shared libraries they load.
//
// An Image is described by its files; Layout writes it as an OCI image
// layout, which `ctr images import` takes as a tar stream (Archive).
package images

import (
	"archive/tar"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image is a single-layer linux/amd64 image.
type Image struct {
	// Ref is the image's full name, registry/repository:tag.
	Ref        string
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
}

// File is one entry of an image's file system: a copy of a host file
// (Source), given content, a symbolic link or a folder.
type File struct {
	Path    string      `json:"path"` // absolute, in the image
	Source  string      `json:"source,omitempty"`
	Content []byte      `json:"content,omitempty"`
	Link    string      `json:"link,omitempty"`
	Dir     bool        `json:"dir,omitempty"`
	Mode    fs.FileMode `json:"mode,omitempty"` // permission bits; default 0755 for folders and sources, 0644 for content
}

// epoch is the time of every file and of the image: images depend only
// on what they hold.
var epoch = time.Unix(0, 0).UTC()

// Key returns a string that changes whenever the image would: its
// configuration and the size and modification time of every host file it
// copies. Callers cache built layouts under it.
func (img Image) Key() (string, error) {
	h := sha256.New()
	cfg := img
	cfg.Files = nil
	if err := json.NewEncoder(h).Encode(cfg); err != nil {
		return "", err
	}
	for _, f := range sorted(img.Files) {
		if err := json.NewEncoder(h).Encode(f); err != nil {
			return "", err
		}
		if f.Source != "" {
			st, err := os.Stat(f.Source)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%d %d\n", st.Size(), st.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func sorted(files []File) []File {
	out := append([]File(nil), files...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Build assembles the image.
func (img Image) Build() (v1.Image, error) {
	for _, f := range img.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return nil, fmt.Errorf("image %s: file path %q: want a clean absolute path", img.Ref, f.Path)
		}
	}
	files, err := dedupe(sorted(img.Files))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Ref, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeTar(pw, files)) }()
		return pr, nil
	}, tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Ref, err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	out, err := mutate.Append(base, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Ref, err)
	}
	cf, err := out.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: epoch}
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env, User: img.User, WorkingDir: "/"}
	return mutate.ConfigFile(out, cf)
}

// dedupe drops repeated entries of sorted files (HostFiles of several
// programs share folders and libraries); two different entries for one
// path are an error.
func dedupe(files []File) ([]File, error) {
	var out []File
	for _, f := range files {
		if n := len(out); n > 0 && out[n-1].Path == f.Path {
			prev := out[n-1]
			if prev.Source != f.Source || prev.Link != f.Link || prev.Dir != f.Dir || string(prev.Content) != string(f.Content) {
				return nil, fmt.Errorf("two different entries for %s", f.Path)
			}
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// writeTar writes files (sorted by path) as a tar stream, with every
// parent folder before its content.
func writeTar(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{"/": true}
	var mkdirs func(p string) error
	mkdirs = func(p string) error {
		if dirs[p] {
			return nil
		}
		if err := mkdirs(path.Dir(p)); err != nil {
			return err
		}
		dirs[p] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(p, "/") + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
	}
	for _, f := range files {
		if err := mkdirs(path.Dir(f.Path)); err != nil {
			return err
		}
		name := strings.TrimPrefix(f.Path, "/")
		hdr := &tar.Header{Name: name, ModTime: epoch, Format: tar.FormatPAX, Mode: int64(f.Mode.Perm())}
		switch {
		case f.Dir:
			if dirs[f.Path] {
				continue
			}
			dirs[f.Path] = true
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
			if hdr.Mode == 0 {
				hdr.Mode = 0o755
			}
			if f.Mode&fs.ModeSticky != 0 {
				hdr.Mode |= 0o1000
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		case f.Source != "":
			if err := writeHostFile(tw, hdr, f.Source); err != nil {
				return err
			}
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Content))
			if hdr.Mode == 0 {
				hdr.Mode = 0o644
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := tw.Write(f.Content); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

func writeHostFile(tw *tar.Writer, hdr *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size()
	if hdr.Mode == 0 {
		hdr.Mode = int64(st.Mode().Perm())
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err == nil && n != st.Size() {
		err = fmt.Errorf("%s changed size while read", src)
	}
	return err
}

// HostFiles returns the image files that reproduce host paths as this
// machine has them: each path's folders and symbolic links (Debian's
// merged /usr: /lib → usr/lib, /usr/sbin/iptables → /etc/alternatives/...)
// and, for ELF executables and libraries, the dynamic loader and every
// shared library they need, found as the loader would (DT_NEEDED in
// DT_RUNPATH and the default multiarch folders), recursively. A folder
// brings everything below it (plugins loaded with dlopen, such as
// iptables' extensions).
func HostFiles(paths ...string) ([]File, error) {
	c := &collector{seen: map[string]bool{}}
	for _, p := range paths {
		if err := c.add(p); err != nil {
			return nil, err
		}
	}
	return c.files, nil
}

type collector struct {
	seen  map[string]bool
	files []File
}

// libDirs are where Debian's loader looks for libraries without
// /etc/ld.so.cache, which images lack.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// add copies host path p: its parent folders as they are on the host
// (symbolic links included), then p itself.
func (c *collector) add(p string) error {
	p = filepath.Clean(p)
	if c.seen[p] {
		return nil
	}
	c.seen[p] = true
	// Walk the parents: a parent that is a symbolic link is reproduced and
	// the rest of the path is followed through it.
	parent := filepath.Dir(p)
	if parent != "/" {
		st, err := os.Lstat(parent)
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 || !c.seen[parent] {
			if err := c.add(parent); err != nil {
				return err
			}
		}
		if real, err := filepath.EvalSymlinks(parent); err == nil && real != parent {
			return c.add(filepath.Join(real, filepath.Base(p)))
		}
	}
	st, err := os.Lstat(p)
	if err != nil {
		return err
	}
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		c.files = append(c.files, File{Path: p, Link: target})
		abs := target
		if !filepath.IsAbs(abs) {
			abs = filepath.Join(filepath.Dir(p), target)
		}
		return c.add(abs)
	case st.IsDir():
		c.files = append(c.files, File{Path: p, Dir: true, Mode: st.Mode().Perm() | st.Mode()&fs.ModeSticky})
		return nil
	case st.Mode().IsRegular():
		c.files = append(c.files, File{Path: p, Source: p, Mode: st.Mode().Perm()})
		return c.addELFDeps(p)
	default:
		return fmt.Errorf("%s: not a file, folder or link", p)
	}
}

// addTree copies a host folder and everything below it.
func (c *collector) addTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return c.add(p)
	})
}

// HostTree is HostFiles for whole folders.
func HostTree(dirs ...string) ([]File, error) {
	c := &collector{seen: map[string]bool{}}
	for _, d := range dirs {
		if err := c.addTree(d); err != nil {
			return nil, err
		}
	}
	return c.files, nil
}

// addELFDeps adds the loader and the libraries an ELF file needs; other
// files are left alone.
func (c *collector) addELFDeps(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return nil // not ELF
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(prog.Open())
		if err != nil {
			return fmt.Errorf("%s: reading its interpreter: %w", p, err)
		}
		if err := c.add(strings.TrimRight(string(b), "\x00")); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil // static
	}
	dirs := libDirs
	if rp, err := f.DynString(elf.DT_RUNPATH); err == nil {
		for _, r := range rp {
			dirs = append(strings.Split(strings.ReplaceAll(r, "$ORIGIN", filepath.Dir(p)), ":"), dirs...)
		}
	}
	for _, lib := range libs {
		found := ""
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
				found = filepath.Join(d, lib)
				break
			}
		}
		if found == "" {
			return fmt.Errorf("%s needs %s, which is not in %v", p, lib, dirs)
		}
		if err := c.add(found); err != nil {
			return err
		}
	}
	return nil
}
