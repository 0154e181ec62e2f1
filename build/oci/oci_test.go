package oci

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

var (
	amd64   = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64   = v1.Platform{OS: "linux", Architecture: "arm64"}
	created = time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)
)

// fakeRequest returns a request for two small files standing in for the
// binaries, written to a new temporary folder.
func fakeRequest(t *testing.T) Request {
	t.Helper()
	dir := t.TempDir()
	var bins []Binary
	for _, p := range []v1.Platform{amd64, arm64} {
		path := filepath.Join(dir, p.Architecture)
		if err := os.WriteFile(path, []byte("binary for "+p.String()), 0o700); err != nil {
			t.Fatal(err)
		}
		bins = append(bins, Binary{Platform: p, Path: path})
	}
	return Request{
		Name:     "prog",
		Binaries: bins,
		User:     "65532:65532",
		Created:  created,
		Source:   "https://github.com/ironlb/ironlb",
		Version:  "v1.2.3",
		Revision: "0123456789abcdef0123456789abcdef01234567",
	}
}

// layerFiles returns the entries of img's only layer, with the content of
// each regular file.
func layerFiles(t *testing.T, img v1.Image) ([]*tar.Header, map[string]string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	mt, err := layers[0].MediaType()
	if err != nil || mt != types.OCILayer {
		t.Errorf("layer media type %q (%v), want %q", mt, err, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var hdrs []*tar.Header
	content := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
		content[h.Name] = string(b)
	}
	return hdrs, content
}

// TestIndex: the index holds one image per binary, in order, each with
// its platform, the binary as /<Name>, and the configuration asked for.
func TestIndex(t *testing.T) {
	req := fakeRequest(t)
	idx, err := Index(req)
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.source":   "https://github.com/ironlb/ironlb",
		"org.opencontainers.image.version":  "v1.2.3",
		"org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
		"org.opencontainers.image.title":    "prog",
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %q, want %q", m.MediaType, types.OCIImageIndex)
	}
	if diff := cmp.Diff(wantLabels, m.Annotations); diff != "" {
		t.Errorf("index annotations (-want +got):\n%s", diff)
	}
	if len(m.Manifests) != 2 {
		t.Fatalf("%d manifests, want 2", len(m.Manifests))
	}
	for i, want := range []v1.Platform{amd64, arm64} {
		d := m.Manifests[i]
		if d.Platform == nil || !d.Platform.Equals(want) {
			t.Errorf("manifest %d: platform %v, want %v", i, d.Platform, want)
		}
		if d.MediaType != types.OCIManifestSchema1 {
			t.Errorf("manifest %d: media type %q, want %q", i, d.MediaType, types.OCIManifestSchema1)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		// (validate runs on what is read back: TestLayout, TestPush. In
		// memory, a tarball layer's descriptor has empty annotations where
		// the serialized manifest has none, which validate.Image flags.)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != want.OS || cf.Architecture != want.Architecture || cf.Variant != "" {
			t.Errorf("%s: config platform %s/%s/%s", want.String(), cf.OS, cf.Architecture, cf.Variant)
		}
		if !cf.Created.Time.Equal(created) {
			t.Errorf("%s: created %v, want %v", want.String(), cf.Created.Time, created)
		}
		wantConfig := v1.Config{User: "65532:65532", Entrypoint: []string{"/prog"}, Labels: wantLabels}
		if diff := cmp.Diff(wantConfig, cf.Config); diff != "" {
			t.Errorf("%s: config (-want +got):\n%s", want.String(), diff)
		}
		hdrs, content := layerFiles(t, img)
		if len(hdrs) != 1 {
			t.Fatalf("%s: %d files in the layer, want 1", want.String(), len(hdrs))
		}
		h := hdrs[0]
		if h.Name != "prog" || h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 ||
			h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(created) {
			t.Errorf("%s: layer entry %q type %c mode %o owner %d:%d (%q:%q) mtime %v; want prog, regular, 755, 0:0, mtime %v",
				want.String(), h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime, created)
		}
		if got := content["prog"]; got != "binary for "+want.String() {
			t.Errorf("%s: /prog holds %q", want.String(), got)
		}
	}
}

// TestIndexLabels: licenses is a label only when set; the user may be a
// bare uid.
func TestIndexLabels(t *testing.T) {
	req := fakeRequest(t)
	req.Licenses = "Apache-2.0"
	req.User = "0"
	idx, err := Index(req)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Config.Labels[LabelLicenses]; got != "Apache-2.0" {
		t.Errorf("licenses label %q, want Apache-2.0", got)
	}
	if cf.Config.User != "0" {
		t.Errorf("user %q, want 0", cf.Config.User)
	}
}

// TestIndexRejects: what Index refuses to build.
func TestIndexRejects(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Request)
		wantErr string
	}{
		{"user name", func(r *Request) { r.User = "nonroot" }, "numeric"},
		{"group name", func(r *Request) { r.User = "65532:nonroot" }, "numeric"},
		{"no user", func(r *Request) { r.User = "" }, "numeric"},
		{"no time", func(r *Request) { r.Created = time.Time{} }, "creation time"},
		{"path as name", func(r *Request) { r.Name = "bin/prog" }, "file name"},
		{"no binaries", func(r *Request) { r.Binaries = nil }, "no binaries"},
		{"same platform twice", func(r *Request) { r.Binaries[1].Platform = amd64 }, "two binaries for linux/amd64"},
		{"no architecture", func(r *Request) { r.Binaries[1].Platform.Architecture = "" }, "lacks an OS or architecture"},
		{"missing binary", func(r *Request) { r.Binaries[1].Path += ".missing" }, "no such file"},
		{"folder as binary", func(r *Request) { r.Binaries[1].Path = filepath.Dir(r.Binaries[1].Path) }, "not a regular file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := fakeRequest(t)
			tc.change(&req)
			_, err := Index(req)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Index: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestIndexReproducible: the digest depends on the binaries' content and
// the request, not on where the binaries are, their modes or their
// modification times, nor on when Index runs.
func TestIndexReproducible(t *testing.T) {
	req := fakeRequest(t)
	first := digest(t, req)

	// The same binaries elsewhere, with another mode and mtime, later.
	copied := req
	copied.Binaries = nil
	dir := t.TempDir()
	for _, b := range req.Binaries {
		data, err := os.ReadFile(b.Path)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "copy-"+b.Platform.Architecture)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, time.Now().Add(time.Hour), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		copied.Binaries = append(copied.Binaries, Binary{Platform: b.Platform, Path: p})
	}
	time.Sleep(1100 * time.Millisecond) // another second of the clock
	if got := digest(t, copied); got != first {
		t.Errorf("same binaries and request elsewhere: digest %s, first %s", got, first)
	}

	// What must change the digest does.
	changes := map[string]func(*Request){
		"created":  func(r *Request) { r.Created = r.Created.Add(time.Second) },
		"version":  func(r *Request) { r.Version = "v1.2.4" },
		"user":     func(r *Request) { r.User = "0:0" },
		"content":  func(r *Request) { r.Binaries[0].Path = r.Binaries[1].Path },
		"platform": func(r *Request) { r.Binaries = r.Binaries[:1] },
	}
	for what, change := range changes {
		r := copied
		r.Binaries = append([]Binary(nil), copied.Binaries...)
		change(&r)
		if got := digest(t, r); got == first {
			t.Errorf("another %s: digest unchanged (%s)", what, got)
		}
	}
}

func digest(t *testing.T, req Request) v1.Hash {
	t.Helper()
	idx, err := Index(req)
	if err != nil {
		t.Fatal(err)
	}
	h, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestLayout: WriteLayout writes an OCI image layout whose index.json names
// the image (by tag for OCI tools, by full reference for containerd);
// ReadLayout returns the same index; writing again replaces the layout.
func TestLayout(t *testing.T) {
	idx, err := Index(fakeRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	want, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "images", "prog")
	for range 2 { // the second write replaces the first
		if err := WriteLayout(dir, idx, "registry.test/ironlb/prog:v1.2.3"); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "prog" {
		t.Errorf("images/ holds %v, want only prog (no leftover temporary folder)", entries)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		t.Errorf("no oci-layout file: %v", err)
	}

	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want 1", len(m.Manifests))
	}
	d := m.Manifests[0]
	wantAnn := map[string]string{
		"org.opencontainers.image.ref.name": "v1.2.3",
		"io.containerd.image.name":          "registry.test/ironlb/prog:v1.2.3",
	}
	if d.Digest != want || d.MediaType != types.OCIImageIndex {
		t.Errorf("index.json entry %s %s, want %s %s", d.MediaType, d.Digest, types.OCIImageIndex, want)
	}
	if diff := cmp.Diff(wantAnn, d.Annotations); diff != "" {
		t.Errorf("index.json annotations (-want +got):\n%s", diff)
	}

	read, err := ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read.Digest(); err != nil || got != want {
		t.Errorf("ReadLayout: digest %s (%v), want %s", got, err, want)
	}
	if err := validate.Index(read); err != nil {
		t.Errorf("the layout's index: %v", err)
	}

	// A layout of two entries is not one WriteLayout wrote.
	if err := layout.Path(dir).AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLayout(dir); err == nil || !strings.Contains(err.Error(), "want one") {
		t.Errorf("ReadLayout of two entries: %v, want an error", err)
	}
	if err := WriteLayout(dir, idx, "no:such:ref"); err == nil {
		t.Error("WriteLayout with an invalid reference: no error")
	}
}

// TestPush: Push puts the index, both images and their blobs into a real
// registry implementation (in process, on loopback); pulled back, they
// have the digests pushed and validate.
func TestPush(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	idx, err := Index(fakeRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/ironlb/prog:v1.2.3"
	if err := Push(ctx, idx, ref); err != nil {
		t.Fatal(err)
	}

	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Index(tag, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	if got, err := pulled.Digest(); err != nil || got != want {
		t.Errorf("pulled index %s (%v), pushed %s", got, err, want)
	}
	if err := validate.Index(pulled); err != nil { // fetches and checks every manifest and blob
		t.Errorf("pulled index: %v", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		img, err := remote.Image(tag.Context().Digest(d.Digest.String()), remote.WithContext(ctx))
		if err != nil {
			t.Fatalf("pulling %s: %v", d.Platform.String(), err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != d.Platform.Architecture {
			t.Errorf("pulled %s: architecture %s", d.Platform.String(), cf.Architecture)
		}
	}

	if err := Push(ctx, idx, "127.0.0.1:1/ironlb/prog:v1.2.3"); err == nil {
		t.Error("push to a closed port: no error")
	}
}
