package pki

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// indexName is the CA's record of every certificate it issued, one JSON
// object per line, appended to: what `ted pki revoke NAME` looks names up
// in.
const indexName = "issued.jsonl"

// Issued is one line of the CA's index.
type Issued struct {
	Serial   string    `json:"serial"` // hexadecimal, as SerialHex
	Name     string    `json:"name"`
	Role     Role      `json:"role"`
	Groups   []string  `json:"groups,omitempty"`
	NotAfter time.Time `json:"not_after"`
	IssuedAt time.Time `json:"issued_at"`
	// How says how: "issue", "enroll" or "renew".
	How string `json:"how"`
	// Renews is, for a renewal, the serial of the certificate it replaced:
	// that one may not renew again, so a copy of its key stolen before the
	// renewal cannot get a certificate of its own.
	Renews string `json:"renews,omitempty"`
}

// SerialHex is a certificate's serial number as TED writes it: lower-case
// hexadecimal without separators.
func SerialHex(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// Record appends cert to the CA's index; how says how it was issued
// ("issue", "enroll" or "renew").
func (ca *CA) Record(cert *x509.Certificate, how string) error {
	return ca.record(cert, how, "")
}

// RecordRenewal appends cert to the CA's index as the renewal of the
// certificate whose serial (SerialHex) is old.
func (ca *CA) RecordRenewal(cert *x509.Certificate, old string) error {
	return ca.record(cert, "renew", old)
}

func (ca *CA) record(cert *x509.Certificate, how, renews string) error {
	role, err := RoleOf(cert)
	if err != nil {
		return err
	}
	groups, err := GroupsOf(cert)
	if err != nil {
		return err
	}
	is := Issued{Serial: SerialHex(cert), Name: cert.Subject.CommonName, Role: role, Groups: groups,
		NotAfter: cert.NotAfter.UTC(), IssuedAt: time.Now().UTC(), How: how, Renews: renews}
	if err := appendJSONLine(filepath.Join(ca.Dir, indexName), is); err != nil {
		return fmt.Errorf("record certificate: %w", err)
	}
	return nil
}

// appendJSONLine appends v as one line of JSON to the file at path,
// creating it if need be. The line is written with one write on a file
// opened for appending, so concurrent writers do not mix their lines, and
// synced, since these files are the CA's records.
func appendJSONLine(path string, v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, modePublic)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// IssuedCertificates reads the CA's index; a CA without one has issued
// nothing recorded. A damaged line is an error naming it.
func (ca *CA) IssuedCertificates() ([]Issued, error) { return ReadIssued(ca.Dir) }

// ReadIssued reads the index of the CA in dir without loading its key, as
// listing certificates needs no signing.
func ReadIssued(dir string) ([]Issued, error) {
	path := filepath.Join(dir, indexName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Issued
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var is Issued
		if err := json.Unmarshal(sc.Bytes(), &is); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, is)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}
