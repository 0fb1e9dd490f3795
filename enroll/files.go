package enroll

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"ted/pki"
)

// NewKey makes a node key as ted pki issue does (ECDSA P-256) and returns
// it with its PKCS #8 PEM encoding.
func NewKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// File is one file to write: a private one is 0600 from its creation on,
// the others 0644.
type File struct {
	Path    string
	Data    []byte
	Private bool
}

// Staged is a set of files written, and synced, beside their final paths
// under temporary names, waiting to be put in place: a private key is on
// disk before the request that certifies it leaves, and a crash at any
// point leaves either the old files or the new ones at each path.
type Staged struct {
	files []File
	temps []string
}

// Stage writes files under temporary names beside their paths.
func Stage(files ...File) (*Staged, error) {
	s := &Staged{}
	for _, f := range files {
		tmp, err := writeTemp(f)
		if err != nil {
			s.Discard()
			return nil, err
		}
		s.files = append(s.files, f)
		s.temps = append(s.temps, tmp)
	}
	return s, nil
}

// Add stages more files.
func (s *Staged) Add(files ...File) error {
	more, err := Stage(files...)
	if err != nil {
		return err
	}
	s.files = append(s.files, more.files...)
	s.temps = append(s.temps, more.temps...)
	return nil
}

// Commit puts the files in place, in the order staged. Without force an
// existing file is not touched: it is an error wrapping pki.ErrExists.
// With force each replaces what is there in one rename. On an error, what
// is not in place yet stays staged, named in the error (see Pending), for
// the caller to Discard or keep: after a join token is spent, a staged key
// is the only copy there is.
func (s *Staged) Commit(force bool) error {
	if !force {
		for _, f := range s.files {
			if _, err := os.Lstat(f.Path); err == nil {
				return fmt.Errorf("%s: %w", f.Path, pki.ErrExists)
			}
		}
	}
	for len(s.files) > 0 {
		f, tmp := s.files[0], s.temps[0]
		var err error
		if force {
			err = os.Rename(tmp, f.Path)
		} else {
			// A hard link fails if the path exists, where a rename
			// would replace it.
			if err = os.Link(tmp, f.Path); err == nil {
				_ = os.Remove(tmp)
			} else if errors.Is(err, fs.ErrExist) {
				err = pki.ErrExists
			}
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
		s.files, s.temps = s.files[1:], s.temps[1:]
		syncDir(filepath.Dir(f.Path))
	}
	return nil
}

// Pending says which staged files are not in place yet: "TEMP (for
// PATH)", separated by commas, for an error message that tells the
// operator what to rename.
func (s *Staged) Pending() string {
	var out []string
	for i, t := range s.temps {
		out = append(out, fmt.Sprintf("%s (for %s)", t, s.files[i].Path))
	}
	return strings.Join(out, ", ")
}

// Discard removes what is staged and not committed.
func (s *Staged) Discard() {
	for _, t := range s.temps {
		_ = os.Remove(t)
	}
	s.files, s.temps = nil, nil
}

// Renewal writes a node's new key and certificate over tls.key and
// tls.cert so that whatever the moment of a crash, the pair at those paths
// is either consistent or completed by Recover at the next start:
//
//  1. StageKey writes the new key to KEY.new before the request leaves
//     (once the CA has signed, the old certificate may not renew again:
//     the new key must not be lost);
//  2. Commit writes the certificate to CERT.new, then renames KEY.new over
//     KEY, then CERT.new over CERT.
//
// A crash before 2 leaves the old pair, and a KEY.new that the next
// renewal replaces; during 2, Recover finds CERT.new with the key it
// certifies, at KEY.new or already at KEY, and finishes the renames.
type Renewal struct {
	Cert, Key string
}

// Staging names: beside the files, fixed, so that Recover finds them.
func (r Renewal) newCert() string { return r.Cert + ".new" }
func (r Renewal) newKey() string  { return r.Key + ".new" }

// StageKey writes the new key to KEY.new (0600).
func (r Renewal) StageKey(keyPEM []byte) error {
	return writeFileAtomic(File{Path: r.newKey(), Data: keyPEM, Private: true})
}

// DiscardKey removes KEY.new, when the renewal was refused.
func (r Renewal) DiscardKey() { _ = os.Remove(r.newKey()) }

// Commit puts the staged key and cert in place. On an error the staged
// files are kept and named: Recover finishes at the next start.
func (r Renewal) Commit(cert *x509.Certificate) error {
	if err := writeFileAtomic(File{Path: r.newCert(), Data: pki.EncodeCertificate(cert)}); err != nil {
		return fmt.Errorf("%w (the new key is kept at %s)", err, r.newKey())
	}
	if err := os.Rename(r.newKey(), r.Key); err != nil {
		return fmt.Errorf("write %s: %w (the new key and certificate are kept at %s and %s; ted puts them in place at its next start)", r.Key, err, r.newKey(), r.newCert())
	}
	syncDir(filepath.Dir(r.Key))
	if err := os.Rename(r.newCert(), r.Cert); err != nil {
		return fmt.Errorf("write %s: %w (the new certificate is kept at %s; ted puts it in place at its next start)", r.Cert, err, r.newCert())
	}
	syncDir(filepath.Dir(r.Cert))
	return nil
}

// Recover finishes a renewal that a crash interrupted in Commit: if
// CERT.new certifies the key at KEY.new, both are put in place; if it
// certifies the key at KEY and CERT does not, CERT.new is. It returns what
// it did, for the log, or "" if there was nothing to finish. A CERT.new
// that matches neither is left alone.
func (r Renewal) Recover() (string, error) {
	newCert, err := os.ReadFile(r.newCert())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if _, err := tls.X509KeyPair(newCert, readOrNothing(r.newKey())); err == nil {
		if err := os.Rename(r.newKey(), r.Key); err != nil {
			return "", fmt.Errorf("finish an interrupted renewal: %w", err)
		}
		syncDir(filepath.Dir(r.Key))
		if err := os.Rename(r.newCert(), r.Cert); err != nil {
			return "", fmt.Errorf("finish an interrupted renewal: %w", err)
		}
		syncDir(filepath.Dir(r.Cert))
		return fmt.Sprintf("finished an interrupted renewal: put %s and %s in place", r.newKey(), r.newCert()), nil
	}
	key := readOrNothing(r.Key)
	if _, err := tls.X509KeyPair(newCert, key); err != nil {
		return "", nil
	}
	if cur, err := os.ReadFile(r.Cert); err == nil {
		if _, err := tls.X509KeyPair(cur, key); err == nil {
			return "", nil // consistent already
		}
	}
	if err := os.Rename(r.newCert(), r.Cert); err != nil {
		return "", fmt.Errorf("finish an interrupted renewal: %w", err)
	}
	syncDir(filepath.Dir(r.Cert))
	return fmt.Sprintf("finished an interrupted renewal: %s, which matches %s, put in place", r.newCert(), r.Key), nil
}

// readOrNothing is the file's content, or nothing if it cannot be read, which
// then matches no certificate.
func readOrNothing(path string) []byte {
	data, _ := os.ReadFile(path)
	return data
}

// writeFileAtomic writes f under a temporary name and renames it into
// place.
func writeFileAtomic(f File) error {
	tmp, err := writeTemp(f)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, f.Path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", f.Path, err)
	}
	syncDir(filepath.Dir(f.Path))
	return nil
}

func writeTemp(f File) (string, error) {
	dir, base := filepath.Split(f.Path)
	if dir == "" {
		dir = "."
	}
	// CreateTemp makes it 0600: a key is never readable by others.
	fh, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", f.Path, err)
	}
	var chmod error
	if !f.Private {
		chmod = fh.Chmod(0o644)
	}
	_, werr := fh.Write(f.Data)
	err = errors.Join(chmod, werr, fh.Sync(), fh.Close())
	if err != nil {
		_ = os.Remove(fh.Name())
		return "", fmt.Errorf("write %s: %w", f.Path, err)
	}
	return fh.Name(), nil
}

// syncDir makes a rename in dir durable, as far as the system allows.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
