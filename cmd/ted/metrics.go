package main

import "github.com/prometheus/client_golang/prometheus"

// gatherer is what a daemon's /metrics gathers: its own series (metrics,
// else registry) and ted_build_info.
func (a daemonAdmin) gatherer() prometheus.Gatherer {
	g := prometheus.Gatherers{buildInfoRegistry()}
	switch {
	case a.metrics != nil:
		g = append(g, a.metrics)
	case a.registry != nil:
		g = append(g, a.registry)
	}
	return g
}

// buildInfoRegistry holds ted_build_info: always 1, its labels the version
// ted version prints and the Go version it was built with, so that the
// versions running in a fleet can be counted and an upgrade followed. It
// is a registry of its own, so the daemons' registries need not know the
// version.
func buildInfoRegistry() *prometheus.Registry {
	v := buildVersion()
	r := prometheus.NewRegistry()
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "ted_build_info",
		Help:        "Always 1; the labels say which ted runs: version (as ted version prints it) and goversion.",
		ConstLabels: prometheus.Labels{"version": v.Version, "goversion": v.GoVersion},
	}, func() float64 { return 1 }))
	return r
}
