package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// fingerprintPrefix names the hash in a fingerprint, so that another one
// can follow without a value of one being mistaken for the other.
const fingerprintPrefix = "sha256:"

// Fingerprint identifies a certificate, usually the CA's: "sha256:" and the
// lower-case hexadecimal SHA-256 of its DER encoding, as `ted pki
// fingerprint` prints it and `ted enroll --ca-fingerprint` pins it. It is
// what `openssl x509 -noout -fingerprint -sha256` prints, without the
// colons and in lower case.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return fingerprintPrefix + hex.EncodeToString(sum[:])
}

// ParseFingerprint reads a fingerprint as an operator may paste it: with or
// without the "sha256:" prefix, in either case, with or without ':'
// between the bytes, and with surrounding white space; or the whole line
// that openssl x509 -noout -fingerprint -sha256 prints ("sha256
// Fingerprint=AB:CD:…"). It returns the canonical form, as Fingerprint
// writes it.
func ParseFingerprint(s string) (string, error) {
	v := strings.TrimSpace(s)
	if name, value, ok := strings.Cut(v, "="); ok && strings.EqualFold(name, "sha256 Fingerprint") {
		v = value
	}
	if len(v) >= len(fingerprintPrefix) && strings.EqualFold(v[:len(fingerprintPrefix)], fingerprintPrefix) {
		v = v[len(fingerprintPrefix):]
	}
	v = strings.ToLower(strings.ReplaceAll(v, ":", ""))
	sum, err := hex.DecodeString(v)
	if err != nil || len(sum) != sha256.Size {
		return "", fmt.Errorf("invalid certificate fingerprint %q: want sha256: and %d hexadecimal digits, as ted pki fingerprint prints it", s, 2*sha256.Size)
	}
	return fingerprintPrefix + v, nil
}

// MatchFingerprint reports whether cert has the fingerprint s, which
// ParseFingerprint must accept; a malformed s matches nothing.
func MatchFingerprint(cert *x509.Certificate, s string) bool {
	want, err := ParseFingerprint(s)
	if err != nil {
		return false
	}
	// Fingerprints are public, but comparing in constant time costs
	// nothing and spares the question.
	return subtle.ConstantTimeCompare([]byte(want), []byte(Fingerprint(cert))) == 1
}
