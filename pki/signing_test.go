package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestSigningKeyRoundTrip(t *testing.T) {
	// Its folder is made, as ted pki init makes its own.
	out := filepath.Join(t.TempDir(), "keys", "publisher.key")
	pub, err := GenerateSigningKey(out, false)
	if err != nil {
		t.Fatalf("GenerateSigningKey: %v", err)
	}
	priv, err := LoadSigningKey(out)
	if err != nil {
		t.Fatalf("LoadSigningKey: %v", err)
	}
	loadedPub, err := LoadPublicKey(out + ".pub")
	if err != nil {
		t.Fatalf("LoadPublicKey: %v", err)
	}
	if !loadedPub.Equal(pub) || !priv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatal("loaded keys differ from the generated key")
	}
	msg := []byte("manifest bytes")
	sig := ed25519.Sign(priv, msg)
	if !ed25519.Verify(loadedPub, msg, sig) {
		t.Fatal("signature by the loaded private key does not verify with the loaded public key")
	}
	if ed25519.Verify(loadedPub, []byte("manifest bytez"), sig) {
		t.Fatal("signature verifies over other bytes")
	}

	second := filepath.Join(t.TempDir(), "second.key")
	pub2, err := GenerateSigningKey(second, false)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := LoadPublicKeys([]string{out + ".pub", second + ".pub"})
	if err != nil {
		t.Fatalf("LoadPublicKeys: %v", err)
	}
	if len(keys) != 2 || !keys[0].Equal(pub) || !keys[1].Equal(pub2) {
		t.Fatalf("LoadPublicKeys returned %d keys, not the two in order", len(keys))
	}
	_, err = LoadPublicKeys([]string{out + ".pub", filepath.Join(t.TempDir(), "missing.pub")})
	if err == nil || !strings.Contains(err.Error(), "missing.pub") {
		t.Fatalf("LoadPublicKeys with a missing file: %v", err)
	}
}

func TestLoadSigningKeyRefusesLooseMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	out := filepath.Join(t.TempDir(), "publisher.key")
	if _, err := GenerateSigningKey(out, false); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(out, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadSigningKey(out)
		if err == nil || !strings.Contains(err.Error(), out) || !strings.Contains(err.Error(), fmt.Sprintf("%04o", mode)) {
			t.Errorf("mode %04o: LoadSigningKey = %v, want an error naming the file and its mode", mode, err)
		}
	}
	if err := os.Chmod(out, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigningKey(out); err != nil {
		t.Errorf("mode 0400 refused: %v", err)
	}
}

// TestLoadSigningKeyRefusesPublicKey: the .pub half given as the signing
// key is named for what it is, whatever its mode, not sent to chmod.
func TestLoadSigningKeyRefusesPublicKey(t *testing.T) {
	out := filepath.Join(t.TempDir(), "publisher.key")
	if _, err := GenerateSigningKey(out, false); err != nil {
		t.Fatal(err)
	}
	pub := out + ".pub"
	for _, mode := range []os.FileMode{0o644, 0o600} {
		if err := os.Chmod(pub, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadSigningKey(pub)
		if !errors.Is(err, ErrPublicKey) || err.Error() != "load signing key: "+pub+" is a public key, not a private signing key" {
			t.Errorf("mode %04o: LoadSigningKey(.pub) = %v, want ErrPublicKey naming the file", mode, err)
		}
	}
}

// TestCorruptFiles checks that every loader refuses bad input with an error
// that names the file.
func TestCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	signing := filepath.Join(dir, "good.key")
	if _, err := GenerateSigningKey(signing, false); err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM, err := encodePrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbage := write("garbage", "this is not PEM\x00\xff")
	badDER := write("bad-der", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	badKeyDER := write("bad-key-der", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	badPubDER := write("bad-pub-der", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
	ecdsaKey := write("ecdsa.key", string(ecPEM))
	pubAsPrivate := write("pub-as-private", mustRead(t, signing+".pub"))
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name string
		load func(string) error
		file string
		want string // besides the file name
	}{
		{"cert garbage", loadCert, garbage, "no PEM"},
		{"cert bad DER", loadCert, badDER, ""},
		{"cert given a key", loadCert, signing, `"PRIVATE KEY"`},
		{"cert missing", loadCert, missing, ""},
		{"pool garbage", loadPool, garbage, "no PEM certificate"},
		{"pool bad DER", loadPool, badDER, ""},
		{"pool missing", loadPool, missing, ""},
		{"signing garbage", loadSigning, garbage, "no PEM"},
		{"signing bad DER", loadSigning, badKeyDER, ""},
		{"signing given public key", loadSigning, pubAsPrivate, "is a public key"},
		{"signing ECDSA", loadSigning, ecdsaKey, "not an ed25519 key"},
		{"signing missing", loadSigning, missing, ""},
		{"public garbage", loadPublic, garbage, "no PEM"},
		{"public bad DER", loadPublic, badPubDER, ""},
		{"public given private key", loadPublic, signing, `"PRIVATE KEY"`},
		{"public missing", loadPublic, missing, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.load(tt.file)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.file) {
				t.Errorf("error %q does not name %s", err, tt.file)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func loadCert(f string) error    { _, err := LoadCertificate(f); return err }
func loadPool(f string) error    { _, err := LoadCertPool(f); return err }
func loadSigning(f string) error { _, err := LoadSigningKey(f); return err }
func loadPublic(f string) error  { _, err := LoadPublicKey(f); return err }

func mustRead(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
