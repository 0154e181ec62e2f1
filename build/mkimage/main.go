// Command mkimage builds IronLB's container images without a container
// engine, for `make image` and `make image-push`:
//
//	go run ./build/mkimage build [flags]   # bin/images/ironlb-{ccm,speaker}/, OCI image layouts
//	go run ./build/mkimage push [flags]    # push those layouts to -registry
//
// build cross-compiles ironlb-ccm and ironlb-speaker for each platform
// (CGO_ENABLED=0, -trimpath, the given -ldflags) and assembles them with
// package build/oci into one image index per program. It lives under build/,
// not cmd/: cmd/ holds only the binaries IronLB ships, and this is part of
// how they are built.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ironlb/ironlb/build/oci"
)

// program is one binary IronLB ships as an image.
type program struct {
	name string // binary and image name
	pkg  string // Go package, relative to the module root
	user string // numeric uid:gid the entrypoint runs as
}

// programs are the images make image builds.
var programs = []program{
	// Non-root, the user and group deploy/ccm/deployment.yaml's
	// securityContext names (runAsUser, runAsGroup: 65532).
	{name: "ironlb-ccm", pkg: "./cmd/ironlb-ccm", user: "65532:65532"},
	// Root: the layer-2 responder's raw sockets need NET_RAW, which
	// Kubernetes cannot give a non-root user (see the securityContext in
	// deploy/speaker/daemonset.yaml, which drops every other capability).
	{name: "ironlb-speaker", pkg: "./cmd/ironlb-speaker", user: "0:0"},
}

// buildConfig is what build needs.
type buildConfig struct {
	root                                string   // module root: where go build runs
	out                                 string   // parent folder of the layouts, one per program
	platforms                           []string // os/arch[/variant]
	ldflags                             string
	registry                            string // the images are named <registry>/<program>:<tag>
	tag                                 string
	created                             time.Time
	source, version, revision, licenses string
	log                                 io.Writer
}

// built is one program's image.
type built struct {
	program program
	layout  string // folder of its OCI image layout
	ref     string
	index   v1.ImageIndex
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: mkimage build|push [flags] (-h for the flags)")
	}
	fs := flag.NewFlagSet("mkimage "+args[0], flag.ContinueOnError)
	out := fs.String("out", "bin/images", "parent folder of the OCI image layouts, one per program")
	registry := fs.String("registry", "ghcr.io/ironlb", "the images are named <registry>/<program>:<tag>")
	tag := fs.String("tag", "", "the images' tag (default: -version)")
	version := fs.String("version", "", "the version the binaries are built as (org.opencontainers.image.version)")
	switch args[0] {
	case "build":
		c := buildConfig{log: os.Stdout}
		fs.StringVar(&c.root, "C", ".", "the module root, where go build runs")
		platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch[/variant]")
		fs.StringVar(&c.ldflags, "ldflags", "", "go build -ldflags (make image: -s -w and the Makefile's LDFLAGS, which set the version)")
		fs.StringVar(&c.revision, "revision", "", "the commit built (org.opencontainers.image.revision)")
		fs.StringVar(&c.source, "source", "https://github.com/ironlb/ironlb", "the source repository (org.opencontainers.image.source)")
		fs.StringVar(&c.licenses, "licenses", "", "SPDX license expression (org.opencontainers.image.licenses; left out when empty)")
		epoch := fs.String("epoch", os.Getenv("SOURCE_DATE_EPOCH"), "creation time of the images and their files, in Unix seconds (default $SOURCE_DATE_EPOCH; make image: the commit's time)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		secs, err := strconv.ParseInt(*epoch, 10, 64)
		if err != nil {
			return fmt.Errorf("-epoch %q (or $SOURCE_DATE_EPOCH): want Unix seconds; a fixed time makes the images reproducible", *epoch)
		}
		c.created = time.Unix(secs, 0).UTC()
		c.platforms = strings.Split(*platforms, ",")
		c.out, c.registry, c.version, c.tag = *out, *registry, *version, *tag
		if c.tag == "" {
			c.tag = c.version
		}
		if c.version == "" || c.revision == "" {
			return errors.New("build needs -version and -revision")
		}
		if err := checkLicenses(c.root, c.licenses); err != nil {
			return err
		}
		start := time.Now()
		images, err := build(ctx, c)
		if err != nil {
			return err
		}
		for _, b := range images {
			if err := describe(c.log, b); err != nil {
				return err
			}
		}
		fmt.Fprintf(c.log, "built in %s\n", time.Since(start).Round(100*time.Millisecond))
		return nil
	case "push":
		insecure := fs.Bool("insecure", false, "plain HTTP to a registry not on loopback")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *tag == "" {
			*tag = *version
		}
		if *tag == "" {
			return errors.New("push needs -tag or -version")
		}
		var opts []oci.PushOption
		if *insecure {
			opts = append(opts, oci.Insecure())
		}
		refs, err := push(ctx, *out, *registry, *tag, opts...)
		for _, r := range refs {
			fmt.Println(r)
		}
		return err
	default:
		return fmt.Errorf("unknown command %q: want build or push", args[0])
	}
}

// checkLicenses refuses an empty licenses label when the repository at
// root has a license file: the images would not say under which license
// they ship.
func checkLicenses(root, licenses string) error {
	if licenses != "" {
		return nil
	}
	for _, f := range []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"} {
		if _, err := os.Stat(filepath.Join(root, f)); err == nil {
			return fmt.Errorf("%s exists: set -licenses (make image LICENSES=<SPDX expression>) for the org.opencontainers.image.licenses label", f)
		}
	}
	return nil
}

// build compiles every program for every platform of c and writes each
// program's image index as the OCI image layout <c.out>/<program>.
func build(ctx context.Context, c buildConfig) ([]built, error) {
	var plats []v1.Platform
	for _, s := range c.platforms {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", s, err)
		}
		plats = append(plats, *p)
	}
	bins, err := os.MkdirTemp("", "mkimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bins)
	binaries := map[string][]oci.Binary{}
	for _, p := range plats {
		dir := filepath.Join(bins, strings.ReplaceAll(p.String(), "/", "_"))
		if err := goBuild(ctx, c, p, dir); err != nil {
			return nil, err
		}
		for _, prog := range programs {
			binaries[prog.name] = append(binaries[prog.name], oci.Binary{Platform: p, Path: filepath.Join(dir, prog.name)})
		}
	}
	var out []built
	for _, prog := range programs {
		idx, err := oci.Index(oci.Request{
			Name:     prog.name,
			Binaries: binaries[prog.name],
			User:     prog.user,
			Created:  c.created,
			Source:   c.source,
			Version:  c.version,
			Revision: c.revision,
			Licenses: c.licenses,
		})
		if err != nil {
			return nil, err
		}
		b := built{
			program: prog,
			layout:  filepath.Join(c.out, prog.name),
			ref:     c.registry + "/" + prog.name + ":" + c.tag,
			index:   idx,
		}
		if err := oci.WriteLayout(b.layout, idx, b.ref); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// goBuild builds every program for platform p into dir: static
// (CGO_ENABLED=0), without the build machine's paths (-trimpath).
func goBuild(ctx context.Context, c buildConfig, p v1.Platform, dir string) error {
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	switch {
	case p.Variant == "":
	case p.Architecture == "arm": // v6, v7
		env = append(env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	case p.Architecture == "arm64" && p.Variant == "v8":
	default:
		return fmt.Errorf("platform %s: variant %q not supported", p.String(), p.Variant)
	}
	args := []string{"build", "-trimpath", "-ldflags", c.ldflags, "-o", dir + string(filepath.Separator)}
	for _, prog := range programs {
		args = append(args, prog.pkg)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = c.root
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s for %s: %w\n%s", strings.Join(args, " "), p.String(), err, out)
	}
	return nil
}

// describe prints where b is, its digest and the size of each platform's
// image.
func describe(w io.Writer, b built) error {
	digest, err := b.index.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s  %s  %s\n", b.layout, b.ref, digest)
	m, err := b.index.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		img, err := b.index.Image(d.Digest)
		if err != nil {
			return err
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		var size int64
		for _, l := range layers {
			s, err := l.Size()
			if err != nil {
				return err
			}
			size += s
		}
		fmt.Fprintf(w, "  %-12s %s  %.1f MB compressed\n", d.Platform.String(), d.Digest, float64(size)/1e6)
	}
	return nil
}

// push pushes the layout of every program under dir as
// <registry>/<program>:<tag> and returns the references pushed, by digest.
func push(ctx context.Context, dir, registry, tag string, opts ...oci.PushOption) ([]string, error) {
	var refs []string
	for _, prog := range programs {
		idx, err := oci.ReadLayout(filepath.Join(dir, prog.name))
		if err != nil {
			return refs, fmt.Errorf("%w (make image writes it)", err)
		}
		ref := registry + "/" + prog.name + ":" + tag
		if err := oci.Push(ctx, idx, ref, opts...); err != nil {
			return refs, err
		}
		digest, err := idx.Digest()
		if err != nil {
			return refs, err
		}
		refs = append(refs, ref+"@"+digest.String())
	}
	return refs, nil
}
