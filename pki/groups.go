package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
)

// groupsOID identifies the certificate extension that carries a node's
// groups: a DER SEQUENCE OF UTF8String. It sits beside roleOID, under the
// same arc and for the same reasons; non-critical, so that verifiers that
// do not know it still accept the certificate.
var groupsOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 84, 69, 68, 2}

// maxGroups bounds how many groups one certificate binds.
const maxGroups = 32

// ValidateGroup checks one group name: the characters and length of a
// node name (ValidateName). A group is no file name, so "ca" is a group
// like any other.
func ValidateGroup(group string) error {
	return validateIdentifier("group", group)
}

// ValidateGroups checks the groups of a certificate: at most 32, each a
// valid group name, none twice.
func ValidateGroups(groups []string) error {
	if len(groups) > maxGroups {
		return fmt.Errorf("%d groups: at most %d", len(groups), maxGroups)
	}
	seen := map[string]bool{}
	for _, g := range groups {
		if err := ValidateGroup(g); err != nil {
			return err
		}
		if seen[g] {
			return fmt.Errorf("group %q is given twice", g)
		}
		seen[g] = true
	}
	return nil
}

func groupsExtension(groups []string) ([]byte, error) {
	values := make([]asn1.RawValue, len(groups))
	for i, g := range groups {
		b, err := asn1.MarshalWithParams(g, "utf8")
		if err != nil {
			return nil, err
		}
		values[i] = asn1.RawValue{FullBytes: b}
	}
	return asn1.Marshal(values)
}

// GroupsOf returns the groups bound into cert by Issue, none if it has
// none. Like RoleOf it does not verify cert.
func GroupsOf(cert *x509.Certificate) ([]string, error) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(groupsOID) {
			continue
		}
		var values []asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &values)
		if err == nil && len(rest) > 0 {
			err = fmt.Errorf("trailing data")
		}
		if err != nil {
			return nil, fmt.Errorf("certificate %q: malformed groups extension: %w", cert.Subject.CommonName, err)
		}
		groups := make([]string, 0, len(values))
		for _, v := range values {
			var g string
			if _, err := asn1.UnmarshalWithParams(v.FullBytes, &g, "utf8"); err != nil {
				return nil, fmt.Errorf("certificate %q: malformed groups extension: %w", cert.Subject.CommonName, err)
			}
			groups = append(groups, g)
		}
		return groups, nil
	}
	return nil, nil
}
