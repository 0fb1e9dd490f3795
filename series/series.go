// Package series holds the Prometheus series that more than one daemon
// exports in the same form.
package series

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ted/store"
)

// Disk is the free space on the file system of dir (a daemon's
// data_dir) and the floor kept there (min_free_disk), read at each
// scrape: ted_disk_free_bytes and ted_disk_floor_bytes.
func Disk(dir string, floor int64) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ted_disk_free_bytes",
			Help: "Free space on the file system of data_dir, for this process.",
		}, func() float64 {
			free, err := store.FreeBytes(dir)
			if err != nil {
				return math.NaN()
			}
			return float64(free)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ted_disk_floor_bytes",
			Help: "min_free_disk: the free space below which nothing more is received (0: no floor).",
		}, func() float64 { return float64(floor) }),
	}
}

// Values gathers g into one value per series, keyed "name" or
// "name{label=value,...}" (labels sorted): gauges, counters and untyped
// series, for tests and tools that read a registry.
func Values(g prometheus.Gatherer) (map[string]float64, error) {
	families, err := g.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(labels)
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetUntyped() != nil:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out, nil
}

// CertificateExpiry is ted_certificate_expiry_timestamp_seconds: when
// this node's certificate expires (Unix time), read from notAfter at every
// scrape so that a renewed certificate shows at once. Every daemon with a
// certificate exports it, so one alert rule covers them all.
func CertificateExpiry(notAfter func() time.Time) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ted_certificate_expiry_timestamp_seconds",
		Help: "When this node's certificate expires (Unix time); alert well before it, if renewal fails.",
	}, func() float64 { return float64(notAfter().Unix()) })
}
