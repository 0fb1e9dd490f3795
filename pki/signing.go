package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrPublicKey is wrapped by LoadSigningKey's error for a file that holds
// a public key: most often the .pub half of the signing key, given where
// the private key belongs.
var ErrPublicKey = errors.New("is a public key, not a private signing key")

// GenerateSigningKey creates an ed25519 key for signing manifests: out holds
// the private key (PKCS#8 PEM, 0600) and out.pub the public key (PKIX PEM,
// 0644). It refuses to overwrite either file unless force is set.
func GenerateSigningKey(out string, force bool) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	privPEM, err := encodePrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	err = writeFiles(force,
		outFile{path: out, data: privPEM, perm: modePrivate},
		outFile{path: out + ".pub", data: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), perm: modePublic},
	)
	if err != nil {
		return nil, err
	}
	return pub, nil
}

// LoadSigningKey loads an ed25519 private key written by GenerateSigningKey.
// Like ssh, it refuses a file that its group or others may read or write.
func LoadSigningKey(file string) (ed25519.PrivateKey, error) {
	data, err := readPrivate(file)
	if err != nil {
		// A public key is readable by all, so the mode check would
		// refuse it first, saying to chmod what is the wrong file.
		if holdsPublicKey(file) {
			return nil, fmt.Errorf("load signing key: %s %w", file, ErrPublicKey)
		}
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	block, err := decodePEM(file, data, "PRIVATE KEY")
	if err != nil {
		if holdsPublicKey(file) {
			return nil, fmt.Errorf("load signing key: %s %w", file, ErrPublicKey)
		}
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %s: %w", file, err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load signing key: %s: %T is not an ed25519 key", file, parsed)
	}
	return key, nil
}

// LoadPublicKey loads an ed25519 public key written by GenerateSigningKey.
func LoadPublicKey(file string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	block, err := decodePEM(file, data, "PUBLIC KEY")
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load public key: %s: %w", file, err)
	}
	key, ok := parsed.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("load public key: %s: %T is not an ed25519 key", file, parsed)
	}
	return key, nil
}

// LoadPublicKeys loads each file with LoadPublicKey, in order. No files give
// no keys.
func LoadPublicKeys(files []string) ([]ed25519.PublicKey, error) {
	keys := make([]ed25519.PublicKey, 0, len(files))
	for _, f := range files {
		key, err := LoadPublicKey(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// holdsPublicKey reports whether file begins with a PEM public key.
func holdsPublicKey(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return false
	}
	block, _ := pem.Decode(data)
	return block != nil && block.Type == "PUBLIC KEY"
}
