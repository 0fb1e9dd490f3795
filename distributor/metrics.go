package distributor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"ted/series"
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
		m.registry.MustRegister(series.CertificateExpiry(func() time.Time { return self().NotAfter }))
	}
	return m
}

// DiskGauges are the free space on the file system of data_dir and the
// floor kept there (min_free_disk), read at each scrape: the same series
// as a subscriber's. The daemon registers them in Registry; a distributor
// without a data directory has none.
func (d *Distributor) DiskGauges() []prometheus.Collector {
	if d.cfg.DataDir == "" {
		return nil
	}
	return series.Disk(d.cfg.DataDir, d.cfg.MinFreeDisk)
}
