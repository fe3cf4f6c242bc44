package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/gateway/ingest"
)

// Metrics are the daemon's Prometheus metrics: the pipeline's (embedded)
// and the store's, the windows' and the forwarder's.
type Metrics struct {
	Registry *prometheus.Registry
	*ingest.Metrics

	BatchSize    prometheus.Histogram   // operations per commit
	CommitTx     prometheus.Histogram   // seconds per write transaction, fsync included
	StoreBytes   prometheus.Gauge       // state file size
	StoreInUse   prometheus.Gauge       // state file bytes that hold data (the rest is free pages, reused)
	DiskFree     prometheus.Gauge       // free bytes on the data directory's file system
	StoreWarning prometheus.Gauge       // 1 while the state file is above limits.warn_store_bytes
	OldestSealed prometheus.Gauge       // age in seconds of the oldest aggregate not yet forwarded
	Sealed       *prometheus.CounterVec // windows sealed, by reason
}

// NewMetrics registers every metric with a new registry.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg, Metrics: ingest.NewMetrics(reg)}
	m.BatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_commit_batch_size",
		Help: "Operations per group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 11)})
	m.CommitTx = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_commit_transaction_seconds",
		Help: "Time of one group commit's write transaction, fsync included.", Buckets: prometheus.ExponentialBuckets(1e-5, 2, 18)})
	m.StoreBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_store_bytes", Help: "Size of the state file."})
	m.StoreInUse = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_store_inuse_bytes",
		Help: "Bytes of the state file that hold data; the rest are free pages that later writes reuse."})
	m.DiskFree = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_disk_free_bytes", Help: "Free bytes on the data directory's file system."})
	m.StoreWarning = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_store_warning",
		Help: "1 while the state file is above limits.warn_store_bytes (before the hard bound, limits.max_store_bytes)."})
	m.OldestSealed = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_oldest_unforwarded_seconds",
		Help: "Age of the oldest sealed aggregate not yet confirmed upstream."})
	m.Sealed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_windows_sealed_total",
		Help: "Aggregation windows sealed, by reason (time, threshold, correction)."}, []string{"reason"})
	reg.MustRegister(m.BatchSize, m.CommitTx, m.StoreBytes, m.StoreInUse, m.DiskFree, m.StoreWarning, m.OldestSealed, m.Sealed,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
