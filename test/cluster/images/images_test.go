package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestHostFiles checks that a Debian program comes with what it needs to
// run in an image: its symbolic links as on the host (/usr/sbin/iptables →
// /etc/alternatives/iptables → ...), merged /usr (/lib → usr/lib), the
// dynamic loader and its libraries.
func TestHostFiles(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/nft"); err != nil {
		t.Skip("nftables not installed (make cluster-deps)")
	}
	files, err := HostFiles("/usr/sbin/nft", "/usr/sbin/iptables")
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]File{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	if f := byPath["/usr/sbin/nft"]; f.Source != "/usr/sbin/nft" {
		t.Errorf("/usr/sbin/nft: %+v", f)
	}
	if f := byPath["/lib"]; f.Link != "usr/lib" {
		t.Errorf("/lib: %+v, want a link to usr/lib", f)
	}
	if f := byPath["/usr/sbin/iptables"]; f.Link != "/etc/alternatives/iptables" {
		t.Errorf("/usr/sbin/iptables: %+v, want a link to the alternative", f)
	}
	// Every link leads to a file or folder of the image.
	for _, f := range files {
		if f.Link == "" {
			continue
		}
		target := f.Link
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(f.Path), target)
		}
		if real, err := filepath.EvalSymlinks(target); err != nil {
			t.Errorf("%s → %s: %v", f.Path, f.Link, err)
		} else if _, ok := byPath[real]; !ok {
			t.Errorf("%s → %s: %s is not in the image", f.Path, f.Link, real)
		}
	}
	var libs []string
	for _, f := range files {
		if f.Source != "" && filepath.Dir(f.Source) == "/usr/lib/x86_64-linux-gnu" {
			libs = append(libs, filepath.Base(f.Source))
		}
	}
	for _, want := range []string{"libnftables.so.1.1.0", "libc.so.6", "ld-linux-x86-64.so.2"} {
		if !slices.Contains(libs, want) {
			t.Errorf("libraries %v lack %s", libs, want)
		}
	}
	if _, err := HostFiles("/nonexistent/tool"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing program: %v", err)
	}
}

// TestBuild checks the layer of an image: parents before content, each
// path once, links and modes as given.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{
		Ref: "registry.example/prog:v1",
		Files: []File{
			{Path: "/usr/local/bin/prog", Source: bin},
			{Path: "/etc/passwd", Content: []byte("root:x:0:0::/:/bin/false\n")},
			{Path: "/bin", Link: "usr/bin"},
			{Path: "/etc/passwd", Content: []byte("root:x:0:0::/:/bin/false\n")},
		},
		Entrypoint: []string{"/usr/local/bin/prog"},
	}
	built, err := img.Build()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := built.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Name+" "+string(rune(h.Typeflag))+" "+h.Linkname+" "+os.FileMode(h.Mode).String())
	}
	want := []string{
		"bin 2 usr/bin -rwxrwxrwx",
		"etc/ 5  -rwxr-xr-x",
		"etc/passwd 0  -rw-r--r--",
		"usr/ 5  -rwxr-xr-x",
		"usr/local/ 5  -rwxr-xr-x",
		"usr/local/bin/ 5  -rwxr-xr-x",
		"usr/local/bin/prog 0  -rwxr-xr-x",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layer (-want +got):\n%s", diff)
	}
	cf, err := built.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/usr/local/bin/prog"}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}

	img.Files = append(img.Files, File{Path: "/etc/passwd", Content: []byte("other\n")})
	if _, err := img.Build(); err == nil {
		t.Error("two different /etc/passwd: no error")
	}
}

// TestCached checks that a layout is built once per content and named as
// ctr images import reads it.
func TestCached(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "prog")
	if err := os.WriteFile(src, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{Ref: "registry.example/prog:v1", Files: []File{{Path: "/prog", Source: src}}}
	cache := filepath.Join(dir, "cache")
	first, err := Cached(cache, img)
	if err != nil {
		t.Fatal(err)
	}
	index, err := os.ReadFile(filepath.Join(first, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(index, []byte(`"io.containerd.image.name": "registry.example/prog:v1"`)) {
		t.Errorf("index.json names no image: %s", index)
	}
	again, err := Cached(cache, img)
	if err != nil || again != first {
		t.Errorf("same content: %s, %v; want %s again", again, err, first)
	}
	if err := os.WriteFile(src, []byte("v2, longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	changed, err := Cached(cache, img)
	if err != nil || changed == first {
		t.Errorf("changed content: %s, %v; want a new layout", changed, err)
	}
	if _, err := os.Stat(first); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old layout stayed: %v", err)
	}
	var buf bytes.Buffer
	if err := Archive(&buf, changed); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	for _, want := range []string{"index.json", "oci-layout", "blobs/"} {
		if !slices.Contains(names, want) {
			t.Errorf("archive %v lacks %s", names, want)
		}
	}
}
