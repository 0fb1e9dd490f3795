package transport

import "time"

// CertificateStatus is a node's own certificate as the status of every
// daemon shows it.
type CertificateStatus struct {
	Name    string    `json:"name"`
	Serial  string    `json:"serial"`
	Groups  []string  `json:"groups,omitempty"`
	Expires time.Time `json:"expires"`
	// DaysLeft is the whole days until Expires, negative once expired.
	DaysLeft int `json:"days_left"`
}

// NewCertificateStatus describes the certificate of id at now.
func NewCertificateStatus(id Identity, now time.Time) *CertificateStatus {
	return &CertificateStatus{Name: id.Name, Serial: id.Serial, Groups: id.Groups, Expires: id.NotAfter, DaysLeft: DaysLeft(id.NotAfter, now)}
}

// DaysLeft is the whole days from now until expires, rounded down:
// negative once it has passed.
func DaysLeft(expires, now time.Time) int {
	left := expires.Sub(now)
	days := int(left / (24 * time.Hour))
	if left < 0 && left%(24*time.Hour) != 0 {
		days--
	}
	return days
}
