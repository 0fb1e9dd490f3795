package distributor

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"ted/store"
	"ted/transport"
)

// metrics are the distributor's Prometheus series.
type metrics struct {
	registry       *prometheus.Registry
	chunksIn       prometheus.Counter
	bytesIn        prometheus.Counter
	chunksOut      prometheus.Counter
	bytesOut       prometheus.Counter
	revisionsIn    prometheus.Counter
	refused        *prometheus.CounterVec
	corrupt        prometheus.Counter
	childrenOnline prometheus.GaugeFunc
	// revokedClosed counts the sessions closed because a new revocation
	// list names the peer's certificate.
	revokedClosed prometheus.Counter
}

// newMetrics makes the series; self, if set, tells this node's own
// certificate, whose expiry is a gauge.
func newMetrics(children func() float64, self func() transport.Identity) *metrics {
	m := &metrics{
		registry:       prometheus.NewRegistry(),
		chunksIn:       prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_distributor_received_chunks_total", Help: "Chunks received from publishers and parents."}),
		bytesIn:        prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_distributor_received_bytes_total", Help: "Encoded chunk bytes received from publishers and parents."}),
		chunksOut:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_distributor_sent_chunks_total", Help: "Chunks sent to children."}),
		bytesOut:       prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_distributor_sent_bytes_total", Help: "Encoded chunk bytes sent to children."}),
		revisionsIn:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_distributor_stored_revisions_total", Help: "Revisions received and stored."}),
		refused:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ted_distributor_refused_total", Help: "Peers and revisions refused, by reason."}, []string{"reason"}),
		corrupt:        prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_distributor_corrupt_chunks_total", Help: "Chunks found corrupt, received or in the store."}),
		childrenOnline: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ted_distributor_children_connected", Help: "Children connected now."}, children),
		revokedClosed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_distributor_revoked_sessions_closed_total", Help: "Sessions closed because the peer's certificate was revoked."}),
	}
	m.registry.MustRegister(m.chunksIn, m.bytesIn, m.chunksOut, m.bytesOut, m.revisionsIn, m.refused, m.corrupt, m.childrenOnline, m.revokedClosed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if self != nil {
		m.registry.MustRegister(certificateExpiry(self))
	}
	return m
}

// certificateExpiry is the gauge of when this node's certificate expires,
// as Unix seconds, read from self at every scrape so that a renewed
// certificate shows at once.
func certificateExpiry(self func() transport.Identity) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ted_certificate_expiry_timestamp_seconds",
		Help: "When this node's certificate expires (Unix time); alert well before it, if renewal fails.",
	}, func() float64 { return float64(self().NotAfter.Unix()) })
}

// DiskGauges are the free space on the file system of data_dir and the
// floor kept there (min_free_disk), read at each scrape: the same series
// as a subscriber's. The daemon registers them in Registry; a distributor
// without a data directory has none.
func (d *Distributor) DiskGauges() []prometheus.Collector {
	if d.cfg.DataDir == "" {
		return nil
	}
	dir, floor := d.cfg.DataDir, d.cfg.MinFreeDisk
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
