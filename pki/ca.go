package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Names and lifetimes of what InitCA and Issue write.
const (
	caCertName = "ca.crt"
	caKeyName  = "ca.key"
	caSubject  = "TED CA"

	caValidity   = 10 * 365 * 24 * time.Hour
	nodeValidity = 2 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a certificate issued on one
	// server is already valid on a peer whose clock is a little behind.
	clockSkew = 5 * time.Minute

	maxNameLen = 64
)

// CAFiles are the files that InitCA wrote.
type CAFiles struct {
	Cert string // DIR/ca.crt, 0644
	Key  string // DIR/ca.key, 0600
}

// CertFiles are the files that Issue wrote, and the host names and
// addresses the certificate is valid for.
type CertFiles struct {
	Cert  string // DIR/NAME.crt, 0644
	Key   string // DIR/NAME.key, 0600
	Hosts []string
}

// InitCA creates a new certificate authority in dir (created 0755 if
// missing): dir/ca.crt and dir/ca.key, an ECDSA P-256 key valid for ten
// years. It refuses to overwrite either file unless force is set.
func InitCA(dir string, force bool) (CAFiles, error) {
	files := CAFiles{Cert: filepath.Join(dir, caCertName), Key: filepath.Join(dir, caKeyName)}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return CAFiles{}, fmt.Errorf("create CA directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CAFiles{}, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return CAFiles{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caSubject},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// The CA signs node certificates only, never another CA.
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return CAFiles{}, fmt.Errorf("create CA certificate: %w", err)
	}
	keyPEM, err := encodePrivateKey(key)
	if err != nil {
		return CAFiles{}, err
	}
	err = writeFiles(force,
		outFile{path: files.Key, data: keyPEM, perm: modePrivate},
		outFile{path: files.Cert, data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), perm: modePublic},
	)
	if err != nil {
		return CAFiles{}, err
	}
	return files, nil
}

// ValidateName reports whether name can name a node: 1 to 64 ASCII letters,
// digits, '.', '_' or '-', starting with a letter or digit, and not "ca",
// whose files are the CA's.
func ValidateName(name string) error {
	if err := validateIdentifier("node name", name); err != nil {
		return err
	}
	// Case-insensitive, since "CA.crt" is "ca.crt" on some file systems.
	if strings.EqualFold(name, "ca") {
		return fmt.Errorf("invalid node name %q: reserved for the CA", name)
	}
	return nil
}

// validateIdentifier checks the characters of a node or group name; what
// names the kind in the error.
func validateIdentifier(what, s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("invalid %s %q: must be 1 to %d characters", what, s, maxNameLen)
	}
	for i, c := range s {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum || !alnum && c != '.' && c != '_' && c != '-' {
			// The wording of distribution.ValidName, whose rule differs
			// only in '+': a node name is also a file name and a
			// certificate's.
			return fmt.Errorf("invalid %s %q: use ASCII letters a-z A-Z, digits and . _ - (starting with a letter or digit)", what, s)
		}
	}
	return nil
}

// Spec says what a node certificate binds: the node's name, role and
// groups, the host names and addresses it is reached at, and how long it
// is valid.
type Spec struct {
	Name   string
	Role   Role
	Groups []string
	// Hosts are subject alternative names, each an IP address if it parses
	// as one and a DNS name otherwise; none means Name is the one DNS name.
	Hosts []string
	// Validity is how long the certificate is valid from now; 0 means two
	// years. It never outlives the CA.
	Validity time.Duration
}

// Check reports the first problem with the spec: a bad name, role, group
// or host, or a negative validity.
func (s Spec) Check() error {
	if err := ValidateName(s.Name); err != nil {
		return err
	}
	if _, err := ParseRole(string(s.Role)); err != nil {
		return err
	}
	if err := ValidateGroups(s.Groups); err != nil {
		return err
	}
	for _, h := range s.Hosts {
		if net.ParseIP(h) == nil && (h == "" || strings.ContainsAny(h, " \t\r\n/")) {
			return fmt.Errorf("invalid host %q: want a DNS name or an IP address", h)
		}
	}
	if s.Validity < 0 {
		return fmt.Errorf("validity %v: must be positive", s.Validity)
	}
	return nil
}

// Issue creates a certificate for the node name with the given role, signed
// by the CA in dir: dir/NAME.crt and dir/NAME.key (ECDSA P-256). See
// IssueSpec.
func Issue(dir, name string, role Role, hosts []string, force bool) (CertFiles, error) {
	return IssueSpec(dir, Spec{Name: name, Role: role, Hosts: hosts}, force)
}

// IssueSpec creates a certificate as spec says, signed by the CA in dir:
// dir/NAME.crt and dir/NAME.key (ECDSA P-256). It is valid for both TLS
// server and client use, since nodes both listen and dial. It refuses to
// overwrite either file unless force is set, and records the certificate
// in the CA's index (dir/issued.jsonl), so that it can be revoked by name.
func IssueSpec(dir string, spec Spec, force bool) (CertFiles, error) {
	if err := spec.Check(); err != nil {
		return CertFiles{}, err
	}
	hosts := spec.Hosts
	if len(hosts) == 0 {
		hosts = []string{spec.Name}
	}
	files := CertFiles{
		Cert:  filepath.Join(dir, spec.Name+".crt"),
		Key:   filepath.Join(dir, spec.Name+".key"),
		Hosts: append([]string(nil), hosts...),
	}
	ca, err := LoadCA(dir)
	if err != nil {
		return CertFiles{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertFiles{}, fmt.Errorf("generate key for %s: %w", spec.Name, err)
	}
	cert, err := ca.Sign(spec, key.Public())
	if err != nil {
		return CertFiles{}, err
	}
	keyPEM, err := encodePrivateKey(key)
	if err != nil {
		return CertFiles{}, err
	}
	err = writeFiles(force,
		outFile{path: files.Key, data: keyPEM, perm: modePrivate},
		outFile{path: files.Cert, data: EncodeCertificate(cert), perm: modePublic},
	)
	if err != nil {
		return CertFiles{}, err
	}
	if err := ca.Record(cert, "issue"); err != nil {
		return files, err
	}
	return files, nil
}

// EncodeCertificate returns cert as PEM.
func EncodeCertificate(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// CA is a loaded certificate authority: its certificate and signing key,
// and the directory it lives in (its index and revocation list are kept
// there).
type CA struct {
	Dir  string
	Cert *x509.Certificate
	key  crypto.Signer
}

// LoadCA loads dir/ca.crt and dir/ca.key and checks that they belong
// together.
func LoadCA(dir string) (*CA, error) {
	cert, key, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	return &CA{Dir: dir, Cert: cert, key: key}, nil
}

// Sign issues a node certificate for pub as spec says. It writes nothing:
// the caller records it (Record) and hands it out.
func (ca *CA) Sign(spec Spec, pub crypto.PublicKey) (*x509.Certificate, error) {
	if err := spec.Check(); err != nil {
		return nil, err
	}
	hosts := spec.Hosts
	if len(hosts) == 0 {
		hosts = []string{spec.Name}
	}
	var dnsNames []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		dnsNames = append(dnsNames, h)
	}
	now := time.Now()
	validity := spec.Validity
	if validity == 0 {
		validity = nodeValidity
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%s: CA expired on %s", filepath.Join(ca.Dir, caCertName), ca.Cert.NotAfter.Format(time.RFC3339))
	}
	roleValue, err := roleExtension(spec.Role)
	if err != nil {
		return nil, fmt.Errorf("encode role: %w", err)
	}
	exts := []pkix.Extension{{Id: roleOID, Critical: false, Value: roleValue}}
	if len(spec.Groups) > 0 {
		groupsValue, err := groupsExtension(spec.Groups)
		if err != nil {
			return nil, fmt.Errorf("encode groups: %w", err)
		}
		exts = append(exts, pkix.Extension{Id: groupsOID, Critical: false, Value: groupsValue})
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.Name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		ExtraExtensions:       exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("create certificate for %s: %w", spec.Name, err)
	}
	return x509.ParseCertificate(der)
}

// loadCA loads dir/ca.crt and dir/ca.key and checks that they belong together.
func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, caCertName), filepath.Join(dir, caKeyName)
	cert, err := LoadCertificate(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA: %w", err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("load CA: %s is not a CA certificate", certPath)
	}
	data, err := readPrivate(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA: %w", err)
	}
	block, err := decodePEM(keyPath, data, "PRIVATE KEY")
	if err != nil {
		return nil, nil, fmt.Errorf("load CA: %w", err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA: %s: %w", keyPath, err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("load CA: %s: %T cannot sign", keyPath, parsed)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("load CA: %s does not belong to %s", keyPath, certPath)
	}
	return cert, key, nil
}

// newSerial returns a random 128-bit serial number.
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial, nil
}

func encodePrivateKey(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadCertificate loads the first certificate of a PEM file.
func LoadCertificate(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, err := decodePEM(file, data, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return cert, nil
}

// LoadCertPool loads every certificate of a PEM file, usually a ca.crt, as a
// pool of trusted roots. A file without any certificate is an error.
func LoadCertPool(caFile string) (*x509.CertPool, error) {
	certs, err := LoadCACertificates(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}
