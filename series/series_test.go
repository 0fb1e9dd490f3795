package series

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The shared series read what they are given at each scrape, and Values
// keys them by name and sorted labels.
func TestSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	expires := time.Unix(1_900_000_000, 0)
	reg.MustRegister(Disk(t.TempDir(), 1<<30)...)
	reg.MustRegister(CertificateExpiry(func() time.Time { return expires }))
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"b", "a"})
	c.WithLabelValues("2", "1").Add(3)
	reg.MustRegister(c)
	got, err := Values(reg)
	if err != nil {
		t.Fatal(err)
	}
	if got["ted_disk_floor_bytes"] != 1<<30 || got["ted_disk_free_bytes"] <= 0 {
		t.Errorf("disk: %v", got)
	}
	if got["ted_certificate_expiry_timestamp_seconds"] != 1_900_000_000 {
		t.Errorf("expiry %v", got["ted_certificate_expiry_timestamp_seconds"])
	}
	// A renewal shows at the next scrape.
	expires = expires.Add(time.Hour)
	if got, _ := Values(reg); got["ted_certificate_expiry_timestamp_seconds"] != 1_900_003_600 {
		t.Errorf("after renewal: %v", got["ted_certificate_expiry_timestamp_seconds"])
	}
	if got[`x_total{a=1,b=2}`] != 3 {
		t.Errorf("labelled counter: %v", got)
	}
}
