package cpvip

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// KeyInfo is the HKDF info string of the election key.
const KeyInfo = "ironlb.dev/control-plane-vip/v1"

// MinKeyFileSize is the smallest key file accepted.
const MinKeyFileSize = 32

// maxKeyFileSize bounds what is read of a key file (sa.key is a few KiB).
const maxKeyFileSize = 1 << 20

// Key is an election key: HKDF-SHA256 of a key file's contents.
type Key struct {
	k [sha256.Size]byte
}

// DeriveKey derives the election key from a key file's contents.
func DeriveKey(secret []byte) (Key, error) {
	if len(secret) < MinKeyFileSize {
		return Key{}, fmt.Errorf("key material is %d bytes, want at least %d", len(secret), MinKeyFileSize)
	}
	b, err := hkdf.Key(sha256.New, secret, nil, KeyInfo, sha256.Size)
	if err != nil {
		return Key{}, fmt.Errorf("deriving the election key: %w", err)
	}
	var k Key
	copy(k.k[:], b)
	return k, nil
}

func (k Key) sign(b []byte) []byte {
	h := hmac.New(sha256.New, k.k[:])
	h.Write(b)
	return h.Sum(nil)
}

// LoadKeys reads and derives the key of every file, in order: the first
// signs, every one verifies.
func LoadKeys(files []string) ([]Key, error) {
	if len(files) == 0 {
		return nil, errors.New("no key file")
	}
	keys := make([]Key, 0, len(files))
	for _, f := range files {
		b, err := readKeyFile(f)
		if err != nil {
			return nil, err
		}
		k, err := DeriveKey(b)
		if err != nil {
			return nil, fmt.Errorf("key file %s: %w", f, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func readKeyFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading key file %s: %w", name, err)
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("key file %s is over %d bytes", name, maxKeyFileSize)
	}
	return b, nil
}

// KeyRing holds the election keys of a list of key files and reloads them
// when the files change, so rotating a key needs no restart. It is safe for
// concurrent use.
type KeyRing struct {
	files []string
	log   logr.Logger
	keys  atomic.Pointer[[]Key]
	// stamp is the files' sizes and modification times at the last load.
	stamp string
}

// NewKeyRing returns a KeyRing of files; it holds no key until Load or Run
// loads them.
func NewKeyRing(files []string, log logr.Logger) *KeyRing {
	return &KeyRing{files: files, log: log}
}

// Keys returns the current keys (the first signs), or nil before they were
// loaded.
func (r *KeyRing) Keys() []Key {
	if k := r.keys.Load(); k != nil {
		return *k
	}
	return nil
}

// Load loads the keys if the files changed since the last load. On an
// error the previous keys stay.
func (r *KeyRing) Load() error {
	stamp, err := r.fileStamp()
	if err == nil && stamp == r.stamp && r.Keys() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	keys, err := LoadKeys(r.files)
	if err != nil {
		return err
	}
	r.keys.Store(&keys)
	r.stamp = stamp
	return nil
}

func (r *KeyRing) fileStamp() (string, error) {
	var s string
	for _, f := range r.files {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("key file: %w", err)
		}
		s += fmt.Sprintf("%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

// Run loads the keys every interval until ctx ends. It logs the first of a
// run of failures and the recovery; a key file that changes is reloaded.
// ready is closed once keys are loaded the first time.
func (r *KeyRing) Run(ctx context.Context, interval time.Duration, ready chan<- struct{}) {
	failing := false
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		before := r.stamp
		err := r.Load()
		switch {
		case err != nil && !failing:
			failing = true
			if r.Keys() == nil {
				r.log.Error(err, "No election key yet: waiting for the key files (the VIP is not served without one)", "files", r.files)
			} else {
				r.log.Error(err, "Reloading the election keys failed; keeping the current ones", "files", r.files)
			}
		case err == nil:
			if failing || before != r.stamp {
				r.log.Info("Election keys loaded", "files", r.files)
			}
			failing = false
			if ready != nil {
				close(ready)
				ready = nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
