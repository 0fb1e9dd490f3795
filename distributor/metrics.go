package distributor

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
}

func newMetrics(children func() float64) *metrics {
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
	}
	m.registry.MustRegister(m.chunksIn, m.bytesIn, m.chunksOut, m.bytesOut, m.revisionsIn, m.refused, m.corrupt, m.childrenOnline,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
