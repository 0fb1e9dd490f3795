package subscriber

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"ted/transport"
)

// metrics are the subscriber's Prometheus series.
type metrics struct {
	registry   *prometheus.Registry
	chunks     prometheus.Counter
	bytes      prometheus.Counter
	corrupt    prometheus.Counter
	received   prometheus.Counter
	extracted  prometheus.Counter
	failed     prometheus.Counter
	rolledBack prometheus.Counter
	refused    *prometheus.CounterVec
}

// newMetrics makes the series; self, if set, tells this node's own
// certificate, whose expiry is a gauge.
func newMetrics(self func() transport.Identity) *metrics {
	m := &metrics{
		registry:   prometheus.NewRegistry(),
		chunks:     prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_received_chunks_total", Help: "Chunks received from parents."}),
		bytes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_received_bytes_total", Help: "Encoded chunk bytes received from parents."}),
		corrupt:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_corrupt_chunks_total", Help: "Chunks that arrived corrupt and were fetched again."}),
		received:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_received_revisions_total", Help: "Revisions received and stored."}),
		extracted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_extracted_revisions_total", Help: "Revisions extracted and verified."}),
		failed:     prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_failed_extractions_total", Help: "Extractions that failed."}),
		rolledBack: prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_rollbacks_total", Help: "Installations rolled back by an operator."}),
		refused:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ted_subscriber_refused_offers_total", Help: "Offers refused, by reason."}, []string{"reason"}),
	}
	m.registry.MustRegister(m.chunks, m.bytes, m.corrupt, m.received, m.extracted, m.failed, m.rolledBack, m.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if self != nil {
		// The same series as a distributor's: one alert rule for both.
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ted_certificate_expiry_timestamp_seconds",
			Help: "When this node's certificate expires (Unix time); alert well before it, if renewal fails.",
		}, func() float64 { return float64(self().NotAfter.Unix()) }))
	}
	return m
}
