package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/ironlb/ironlb/build/oci"
)

// What the test images are built as: make image's flags, a test version.
const (
	testVersion  = "v9.8.7-test.1"
	testRevision = "0123456789abcdef0123456789abcdef01234567"
	testRegistry = "registry.test/ironlb"
	testLDFlags  = "-s -w -X github.com/ironlb/ironlb/internal/version.Version=" + testVersion +
		" -X k8s.io/component-base/version.gitVersion=v1.37.2"
)

var (
	testCreated   = time.Unix(1764600000, 0).UTC()
	testPlatforms = []string{"linux/amd64", "linux/arm64"}

	// The images built for every test (by program name), once, by the
	// first test that needs them; buildErr is why they are missing.
	buildOnce sync.Once
	buildDir  string
	images    map[string]built
	buildErr  error
	buildTime time.Duration
)

// TestMain removes the images the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// builtImages returns the images, built as make image builds them (two
// programs, two platforms, make image's flags with a test version) into a
// temporary folder once per test process; it skips under -short.
func builtImages(t *testing.T) map[string]built {
	t.Helper()
	if testing.Short() {
		t.Skip("builds ironlb-ccm and ironlb-speaker for two platforms")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "mkimage-test-")
		if buildErr != nil {
			return
		}
		start := time.Now()
		var bs []built
		bs, buildErr = build(context.Background(), buildConfig{
			root:      filepath.Join("..", ".."),
			out:       buildDir,
			platforms: testPlatforms,
			ldflags:   testLDFlags,
			registry:  testRegistry,
			tag:       testVersion,
			created:   testCreated,
			source:    "https://github.com/ironlb/ironlb",
			version:   testVersion,
			revision:  testRevision,
			log:       io.Discard,
		})
		buildTime = time.Since(start)
		images = map[string]built{}
		for _, b := range bs {
			images[b.program.name] = b
		}
	})
	if buildErr != nil {
		t.Fatalf("building the images: %v", buildErr)
	}
	t.Logf("images built in %s", buildTime.Round(100*time.Millisecond))
	return images
}

// wantUser is who each program runs as: the CCM as deploy/ccm's
// runAsUser/runAsGroup, the speaker as root (NET_RAW).
var wantUser = map[string]string{"ironlb-ccm": "65532:65532", "ironlb-speaker": "0:0"}

// TestImages reads each layout back from disk and checks the index (both
// platforms, the OCI annotations), each image's configuration (user,
// entrypoint, exact labels, platform, time) and its only file: the
// program, a static Go binary for that platform built with make image's
// flags.
func TestImages(t *testing.T) {
	imgs := builtImages(t)
	if got := slices.Sorted(func(yield func(string) bool) {
		for n := range imgs {
			if !yield(n) {
				return
			}
		}
	}); !slices.Equal(got, []string{"ironlb-ccm", "ironlb-speaker"}) {
		t.Fatalf("built %v", got)
	}
	for prog, b := range imgs {
		t.Run(prog, func(t *testing.T) {
			if b.layout != filepath.Join(filepath.Dir(b.layout), prog) {
				t.Errorf("layout %s, want <out>/%s", b.layout, prog)
			}
			top, err := layout.ImageIndexFromPath(b.layout)
			if err != nil {
				t.Fatal(err)
			}
			tm, err := top.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(tm.Manifests) != 1 || tm.Manifests[0].Annotations[oci.AnnotationContainerdName] != testRegistry+"/"+prog+":"+testVersion {
				t.Errorf("index.json entries %+v, want one named %s/%s:%s", tm.Manifests, testRegistry, prog, testVersion)
			}
			idx, err := oci.ReadLayout(b.layout)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Index(idx); err != nil {
				t.Errorf("layout: %v", err)
			}
			wantLabels := map[string]string{
				"org.opencontainers.image.source":   "https://github.com/ironlb/ironlb",
				"org.opencontainers.image.version":  testVersion,
				"org.opencontainers.image.revision": testRevision,
				"org.opencontainers.image.title":    prog,
			}
			m, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantLabels, m.Annotations); diff != "" {
				t.Errorf("index annotations (-want +got):\n%s", diff)
			}
			var plats []string
			for _, d := range m.Manifests {
				plats = append(plats, d.Platform.String())
			}
			if !slices.Equal(plats, testPlatforms) {
				t.Fatalf("index platforms %v, want %v", plats, testPlatforms)
			}
			for _, d := range m.Manifests {
				img, err := idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				cf, err := img.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				p := d.Platform.String()
				if cf.OS+"/"+cf.Architecture != p || cf.Variant != "" {
					t.Errorf("%s: configuration says %s/%s variant %q", p, cf.OS, cf.Architecture, cf.Variant)
				}
				if !cf.Created.Time.Equal(testCreated) {
					t.Errorf("%s: created %v, want %v", p, cf.Created.Time, testCreated)
				}
				want := v1.Config{User: wantUser[prog], Entrypoint: []string{"/" + prog}, Labels: wantLabels}
				if diff := cmp.Diff(want, cf.Config); diff != "" {
					t.Errorf("%s: configuration (-want +got):\n%s", p, diff)
				}
				bin := programFile(t, img, prog)
				checkBinary(t, p, bin, d.Platform.Architecture)
			}
		})
	}
}

// programFile returns the content of /<prog>, the only file of img's only
// layer, after checking its metadata.
func programFile(t *testing.T, img v1.Image, prog string) []byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != prog || h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(testCreated) {
		t.Errorf("layer entry %q type %c mode %o owner %d:%d mtime %v; want %s, regular, 755, 0:0, %v",
			h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime, prog, testCreated)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := tr.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("layer holds more than /%s: %v %v", prog, h, err)
	}
	return data
}

// checkBinary checks that bin is a static (no interpreter, no dynamic
// section) ELF executable for goarch without symbols (-s), built by Go with
// CGO_ENABLED=0 and -trimpath.
func checkBinary(t *testing.T, what string, bin []byte, goarch string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("%s: not an ELF file: %v", what, err)
	}
	wantMachine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
	if f.Machine != wantMachine {
		t.Errorf("%s: ELF machine %s, want %s", what, f.Machine, wantMachine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: dynamically linked (%s program header)", what, p.Type)
		}
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s: has a symbol table (built without -s)", what)
	}
	info, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("%s: no Go build information: %v", what, err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	// (With -trimpath, Go leaves -ldflags out of the build information:
	// TestImagesRun checks the version they set; -s shows as no symbols.)
	want := map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": "linux", "GOARCH": goarch}
	for k, v := range want {
		if settings[k] != v {
			t.Errorf("%s: build setting %s=%q, want %q", what, k, settings[k], v)
		}
	}
}

// TestImagesRun takes the binary of this machine's architecture out of
// each image and runs it: --version prints the version it was built as,
// and the speaker's --help exits 0 with its usage.
func TestImagesRun(t *testing.T) {
	imgs := builtImages(t)
	platform := "linux/" + runtime.GOARCH
	if runtime.GOOS != "linux" || !slices.Contains(testPlatforms, platform) {
		t.Skipf("no image for %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	dir := t.TempDir()
	bins := map[string]string{}
	for prog, b := range imgs {
		img, err := imageFor(b.layout, platform)
		if err != nil {
			t.Fatal(err)
		}
		bins[prog] = filepath.Join(dir, prog)
		if err := os.WriteFile(bins[prog], programFile(t, img, prog), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prog, arg  string
		wantStdout string // exact
		wantOutput string // in stdout and stderr
	}{
		{"ironlb-ccm", "--version", "ironlb-ccm " + testVersion + " (Kubernetes v1.37.2)\n", ""},
		{"ironlb-speaker", "--version", "ironlb-speaker " + testVersion + "\n", ""},
		{"ironlb-speaker", "--help", "", "Usage of ironlb-speaker:"},
	}
	for _, tc := range tests {
		t.Run(tc.prog+" "+tc.arg, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, bins[tc.prog], tc.arg)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Env = []string{} // nothing from the test's environment
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s %s: %v\n%s%s", tc.prog, tc.arg, err, stdout.String(), stderr.String())
			}
			if tc.wantStdout != "" && stdout.String() != tc.wantStdout {
				t.Errorf("%s %s printed %q, want %q", tc.prog, tc.arg, stdout.String(), tc.wantStdout)
			}
			if all := stdout.String() + stderr.String(); !strings.Contains(all, tc.wantOutput) || !strings.Contains(all, "--node-name") && tc.arg == "--help" {
				t.Errorf("%s %s printed %q, want %q and the flags", tc.prog, tc.arg, all, tc.wantOutput)
			}
		})
	}
}

// imageFor returns the image of platform in the layout dir.
func imageFor(dir, platform string) (v1.Image, error) {
	idx, err := oci.ReadLayout(dir)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.String() == platform {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("%s: no image for %s", dir, platform)
}

// TestImagesReproducible: assembling the images again from the same
// binaries (copied out of the layouts: another path, mode and mtime, a
// later clock) gives the same index digest, and a second layout holds the
// same blobs as the first.
func TestImagesReproducible(t *testing.T) {
	imgs := builtImages(t)
	for prog, b := range imgs {
		t.Run(prog, func(t *testing.T) {
			dir := t.TempDir()
			req := oci.Request{
				Name: prog, User: wantUser[prog], Created: testCreated,
				Source: "https://github.com/ironlb/ironlb", Version: testVersion, Revision: testRevision,
			}
			for _, p := range testPlatforms {
				img, err := imageFor(b.layout, p)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(dir, strings.ReplaceAll(p, "/", "-"))
				if err := os.WriteFile(path, programFile(t, img, prog), 0o700); err != nil {
					t.Fatal(err)
				}
				plat, err := v1.ParsePlatform(p)
				if err != nil {
					t.Fatal(err)
				}
				req.Binaries = append(req.Binaries, oci.Binary{Platform: *plat, Path: path})
			}
			again, err := oci.Index(req)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := b.index.Digest()
			got, err := again.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("assembled again: index %s, first build %s", got, want)
			}
			second := filepath.Join(dir, "layout")
			if err := oci.WriteLayout(second, again, b.ref); err != nil {
				t.Fatal(err)
			}
			if a, b := blobs(t, b.layout), blobs(t, second); !slices.Equal(a, b) {
				t.Errorf("blobs differ:\nfirst  %v\nsecond %v", a, b)
			}
		})
	}
}

// blobs returns the names of the blobs of the layout dir, sorted.
func blobs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestImagesPush pushes the layouts with make image-push's code to a real
// registry implementation in this process, on loopback, pulls them back
// and compares digests down to every blob.
func TestImagesPush(t *testing.T) {
	imgs := builtImages(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	reg := strings.TrimPrefix(srv.URL, "http://") + "/ironlb"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out := filepath.Dir(imgs["ironlb-ccm"].layout)
	refs, err := push(ctx, out, reg, "v9.8.7")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, prog := range []string{"ironlb-ccm", "ironlb-speaker"} {
		d, _ := imgs[prog].index.Digest()
		want = append(want, reg+"/"+prog+":v9.8.7@"+d.String())
	}
	if diff := cmp.Diff(want, refs); diff != "" {
		t.Errorf("pushed (-want +got):\n%s", diff)
	}

	for prog, b := range imgs {
		t.Run(prog, func(t *testing.T) {
			tag, err := name.NewTag(reg + "/" + prog + ":v9.8.7")
			if err != nil {
				t.Fatal(err)
			}
			pulled, err := remote.Index(tag, remote.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := b.index.Digest()
			if got, err := pulled.Digest(); err != nil || got != want {
				t.Errorf("pulled index %s (%v), built %s", got, err, want)
			}
			// Every manifest, configuration and layer, fetched and hashed.
			if err := validate.Index(pulled); err != nil {
				t.Errorf("pulled: %v", err)
			}
			img, err := remote.Image(tag, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
			if err != nil {
				t.Fatal(err)
			}
			local, err := imageFor(b.layout, "linux/arm64")
			if err != nil {
				t.Fatal(err)
			}
			gotD, _ := img.Digest()
			wantD, _ := local.Digest()
			if gotD != wantD {
				t.Errorf("pulled linux/arm64 image %s, built %s", gotD, wantD)
			}
		})
	}

	if _, err := push(ctx, t.TempDir(), reg, "v9.8.7"); err == nil || !strings.Contains(err.Error(), "make image writes it") {
		t.Errorf("push without layouts: %v", err)
	}
}

// TestCheckLicenses: once the repository has a license file, the images
// must say which license.
func TestCheckLicenses(t *testing.T) {
	dir := t.TempDir()
	if err := checkLicenses(dir, ""); err != nil {
		t.Errorf("no license file, no -licenses: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "LICENSE"), []byte("Apache License\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkLicenses(dir, ""); err == nil || !strings.Contains(err.Error(), "LICENSES=") {
		t.Errorf("LICENSE without -licenses: %v, want an error", err)
	}
	if err := checkLicenses(dir, "Apache-2.0"); err != nil {
		t.Errorf("LICENSE with -licenses: %v", err)
	}
}
