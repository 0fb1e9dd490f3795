package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// CRLName is the file, in the CA's directory, of the revocation list that
// `ted pki revoke` keeps: a standard X.509 CRL signed by the CA, in PEM.
const CRLName = "revoked.crl"

// Revocations is a verified revocation list: the serial numbers of
// certificates that must no longer be accepted, and the list's number,
// which grows with every revocation so that a newer list replaces an older
// one wherever it travels.
type Revocations struct {
	// Number is the CRL number; higher is newer.
	Number *big.Int
	// Raw is the list as the CA signed it (DER), to be passed on.
	Raw []byte
	// ThisUpdate is when the CA signed it.
	ThisUpdate time.Time
	revoked    map[string]time.Time // serial (SerialHex): when
}

// Revoked reports whether cert's serial number is on the list. A nil list
// revokes nothing.
func (r *Revocations) Revoked(cert *x509.Certificate) bool {
	if r == nil || cert == nil {
		return false
	}
	_, ok := r.revoked[SerialHex(cert)]
	return ok
}

// RevokedSerial reports whether the serial (SerialHex) is on the list.
func (r *Revocations) RevokedSerial(serial string) bool {
	if r == nil {
		return false
	}
	_, ok := r.revoked[serial]
	return ok
}

// Serials returns the revoked serial numbers, sorted.
func (r *Revocations) Serials() []string {
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.revoked))
	for s := range r.revoked {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Newer reports whether r is a later list than old; any list is newer than
// none.
func (r *Revocations) Newer(old *Revocations) bool {
	if r == nil {
		return false
	}
	return old == nil || r.Number.Cmp(old.Number) > 0
}

// ParseRevocations parses a CRL, in DER or PEM, and checks that one of cas
// signed it. source names it in errors (a file, or the peer that sent it).
func ParseRevocations(source string, data []byte, cas []*x509.Certificate) (*Revocations, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("%s: PEM block is %q, want \"X509 CRL\"", source, block.Type)
		}
		data = block.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not a revocation list: %w", source, err)
	}
	var sigErr error = errors.New("no CA certificate to check it against")
	for _, ca := range cas {
		if sigErr = crl.CheckSignatureFrom(ca); sigErr == nil {
			break
		}
	}
	if sigErr != nil {
		return nil, fmt.Errorf("%s: revocation list not signed by our CA: %w", source, sigErr)
	}
	if crl.Number == nil {
		return nil, fmt.Errorf("%s: revocation list has no CRL number", source)
	}
	r := &Revocations{Number: crl.Number, Raw: crl.Raw, ThisUpdate: crl.ThisUpdate, revoked: map[string]time.Time{}}
	for _, e := range crl.RevokedCertificateEntries {
		r.revoked[e.SerialNumber.Text(16)] = e.RevocationTime
	}
	return r, nil
}

// LoadRevocations loads and verifies the revocation list in file.
func LoadRevocations(file string, cas []*x509.Certificate) (*Revocations, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return ParseRevocations(file, data, cas)
}

// EncodeRevocations returns r as PEM, as `ted pki revoke` writes it.
func EncodeRevocations(r *Revocations) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: r.Raw})
}

// crlValidity is how far ahead a revocation list's NextUpdate is set. TED
// does not refuse a list past its NextUpdate — an old list still names
// certificates that must stay refused — so it only has to be later than
// ThisUpdate.
const crlValidity = 365 * 24 * time.Hour

// revokeNow is the clock of Revoke; tests set it back.
var revokeNow = time.Now

// Revoke adds the serial numbers (hexadecimal, as SerialHex writes them)
// to the CA's revocation list, DIR/revoked.crl, creating it if need be,
// and returns the new list. A serial already revoked is kept as it was;
// the list's number grows whatever changed, so the new list replaces the
// old one everywhere: it is one more than the last, or the current Unix
// time in seconds if that is more (see below). Revocations of one CA directory are
// serialised by a lock, so that two at once cannot lose either's serials.
func (ca *CA) Revoke(serials []string) (*Revocations, error) {
	numbers := make([]*big.Int, 0, len(serials))
	for _, s := range serials {
		n, err := ParseSerial(s)
		if err != nil {
			return nil, err
		}
		numbers = append(numbers, n)
	}
	path := ca.CRLPath()
	lockPath := path + ".lock"
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, modePublic)
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	defer lock.Close()
	if err := lockFile(lock); err != nil {
		return nil, fmt.Errorf("revoke: lock %s: %w", lockPath, err)
	}
	old, err := LoadRevocations(path, []*x509.Certificate{ca.Cert})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var entries []x509.RevocationListEntry
	number := big.NewInt(1)
	if old != nil {
		crl, err := x509.ParseRevocationList(old.Raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		entries = crl.RevokedCertificateEntries
		number.Add(old.Number, big.NewInt(1))
	}
	now := revokeNow()
	// The number is at least the time in seconds, not just one more than
	// the last: during a CA replacement tls.ca holds both CAs, each with a
	// list of its own, and a node keeps whichever list has the highest
	// number. Counting from 1 under the new CA would make its lists lose to
	// the old CA's for as many revocations as the old one made; a number
	// that follows the clock makes a list signed later the newer one,
	// whichever CA of the bundle signed it. One more than the last still
	// keeps two revocations within a second (or a clock set back) in order.
	if sec := big.NewInt(now.Unix()); number.Cmp(sec) < 0 {
		number = sec
	}
	listed := map[string]bool{}
	for _, e := range entries {
		listed[e.SerialNumber.Text(16)] = true
	}
	for _, n := range numbers {
		if listed[n.Text(16)] {
			continue
		}
		listed[n.Text(16)] = true
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now.UTC()})
	}
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now.Add(-clockSkew),
		NextUpdate:                now.Add(crlValidity),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign revocation list: %w", err)
	}
	r, err := ParseRevocations(path, der, []*x509.Certificate{ca.Cert})
	if err != nil {
		return nil, err
	}
	if err := writeFiles(true, outFile{path: path, data: EncodeRevocations(r), perm: modePublic}); err != nil {
		return nil, err
	}
	return r, nil
}

// ParseSerial reads a certificate serial number as SerialHex writes it
// (and as `ted pki list` shows it); upper case and a "0x" prefix are
// accepted too.
func ParseSerial(s string) (*big.Int, error) {
	digits := strings.TrimPrefix(strings.ToLower(s), "0x")
	n, ok := new(big.Int).SetString(digits, 16)
	if !ok || n.Sign() <= 0 || strings.ContainsAny(digits, "+-_") {
		return nil, fmt.Errorf("invalid serial number %q: want the hexadecimal serial of a certificate, as ted pki list shows it", s)
	}
	return n, nil
}

// CRLPath is the CA's revocation list file.
func (ca *CA) CRLPath() string { return filepath.Join(ca.Dir, CRLName) }

// LoadCACertificates loads every certificate of a PEM file, usually a
// ca.crt: what revocation lists are checked against.
func LoadCACertificates(caFile string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", caFile, len(out)+1, err)
		}
		out = append(out, cert)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate found", caFile)
	}
	return out, nil
}
