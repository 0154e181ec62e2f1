package cpvip

import (
	"crypto/hkdf"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

func TestDeriveKey(t *testing.T) {
	secret := []byte(strings.Repeat("s", 32))
	k, err := DeriveKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := hkdf.Key(sha256.New, secret, nil, "ironlb.dev/control-plane-vip/v1", 32)
	if string(k.k[:]) != string(want) {
		t.Error("the key is not HKDF-SHA256(contents, info ironlb.dev/control-plane-vip/v1)")
	}
	if _, err := DeriveKey(secret[:31]); err == nil {
		t.Error("a 31-byte secret was accepted")
	}
	other, _ := DeriveKey([]byte(strings.Repeat("t", 32)))
	if other == k {
		t.Error("two secrets gave one key")
	}
}

func writeFile(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestKeyRingRotation(t *testing.T) {
	dir := t.TempDir()
	oldF, newF := filepath.Join(dir, "old.key"), filepath.Join(dir, "new.key")
	oldS, newS := strings.Repeat("o", 40), strings.Repeat("n", 40)
	oldK, newK := mustKey(t, oldS), mustKey(t, newS)

	// Missing: no key, an error, retried.
	r := NewKeyRing([]string{oldF}, logr.Discard())
	if err := r.Load(); err == nil || r.Keys() != nil {
		t.Fatalf("missing key file: err %v, keys %d", err, len(r.Keys()))
	}
	writeFile(t, oldF, "short", t0)
	if err := r.Load(); err == nil || r.Keys() != nil {
		t.Fatalf("short key file: err %v, keys %d", err, len(r.Keys()))
	}
	writeFile(t, oldF, oldS, t0.Add(time.Second))
	if err := r.Load(); err != nil {
		t.Fatal(err)
	}
	if ks := r.Keys(); len(ks) != 1 || ks[0] != oldK {
		t.Fatalf("keys after the file appeared: %d", len(ks))
	}

	// Rotation step 1: the new file second; the old still signs.
	writeFile(t, newF, newS, t0)
	r2 := NewKeyRing([]string{oldF, newF}, logr.Discard())
	if err := r2.Load(); err != nil {
		t.Fatal(err)
	}
	if ks := r2.Keys(); len(ks) != 2 || ks[0] != oldK || ks[1] != newK {
		t.Fatal("want [old new]")
	}
	// A message signed with either verifies.
	for _, k := range []Key{oldK, newK} {
		if _, err := Parse(marshal(t, testMessage(), k), r2.Keys()); err != nil {
			t.Errorf("with both keys loaded: %v", err)
		}
	}
	// The file's content changes in place: reloaded.
	writeFile(t, oldF, newS, t0.Add(2*time.Second))
	if err := r2.Load(); err != nil {
		t.Fatal(err)
	}
	if ks := r2.Keys(); ks[0] != newK {
		t.Error("a changed key file was not reloaded")
	}
	// A broken file keeps the previous keys.
	writeFile(t, oldF, "short", t0.Add(3*time.Second))
	if err := r2.Load(); err == nil {
		t.Error("a short key file was accepted")
	}
	if ks := r2.Keys(); len(ks) != 2 || ks[0] != newK {
		t.Error("a failed reload dropped the keys")
	}
}
