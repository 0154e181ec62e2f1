package oci

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PushOption changes how Push pushes.
type PushOption func(*pushOptions)

type pushOptions struct {
	nameOpts   []name.Option
	remoteOpts []remote.Option
}

// Insecure lets Push talk plain HTTP to a registry that is not on loopback
// (loopback and localhost registries get plain HTTP anyway).
func Insecure() PushOption {
	return func(o *pushOptions) { o.nameOpts = append(o.nameOpts, name.Insecure) }
}

// WithRemoteOptions passes options to go-containerregistry's remote
// package (a transport, a user agent, other credentials).
func WithRemoteOptions(opts ...remote.Option) PushOption {
	return func(o *pushOptions) { o.remoteOpts = append(o.remoteOpts, opts...) }
}

// Push pushes idx, its images and their blobs to the registry as ref
// (registry/repository:tag), with the credentials of the default keychain
// (docker login, crane auth login; anonymous when there are none).
func Push(ctx context.Context, idx v1.ImageIndex, ref string, opts ...PushOption) error {
	var o pushOptions
	for _, opt := range opts {
		opt(&o)
	}
	tag, err := name.NewTag(ref, o.nameOpts...)
	if err != nil {
		return fmt.Errorf("pushing %q: %w", ref, err)
	}
	remoteOpts := append([]remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
	}, o.remoteOpts...)
	if err := remote.WriteIndex(tag, idx, remoteOpts...); err != nil {
		return fmt.Errorf("pushing %s: %w", tag, err)
	}
	return nil
}
