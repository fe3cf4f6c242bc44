package gateway

import (
	"github.com/farthing-iot/farthing/protocol"

	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/internal/procio"
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
	Refused      prometheus.Gauge       // device registry entries not loaded
	LateTickets  prometheus.Counter     // tickets folded into corrections of sealed windows
	Grants       *prometheus.CounterVec // grants made and ended, by event
	GrantNanos   *prometheus.CounterVec // nanos reserved (granted) and given back, by event
	GrantsOpen   prometheus.Gauge       // grants open
	Reserved     prometheus.Gauge       // nanos reserved by open grants, every currency together
	Commands     *prometheus.CounterVec // control commands, by action, outcome and reason
	Clock        *clockMetrics          // farthing_clock_*: what the gateway makes of its own clock
	Storage      *storageStats          // the store's syncs, checkpoints and journal, and the bytes written to disk
}

// storageStats reports, when scraped, what the gateway costs its storage:
// the store's counters and the bytes the process wrote to disk.
type storageStats struct {
	st                                 atomic.Pointer[store.Store]
	syncs, checkpoints, journal, wrote *prometheus.Desc
}

func newStorageStats() *storageStats {
	return &storageStats{
		syncs:       prometheus.NewDesc("farthing_store_syncs_total", "fdatasyncs of the state file and its journal.", nil, nil),
		checkpoints: prometheus.NewDesc("farthing_store_checkpoints_total", "Checkpoints: journaled batches written into the state file.", nil, nil),
		journal:     prometheus.NewDesc("farthing_journal_bytes_total", "Bytes of records appended to the state file's journal.", nil, nil),
		wrote: prometheus.NewDesc("farthing_written_bytes_total",
			"Bytes the gateway's process wrote to storage (write_bytes of /proc/self/io): the wear an SD card or eMMC takes.", nil, nil),
	}
}

// watch reports st's counters from now on.
func (s *storageStats) watch(st *store.Store) { s.st.Store(st) }

// Describe sends the metrics' descriptions.
func (s *storageStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.syncs
	ch <- s.checkpoints
	ch <- s.journal
	ch <- s.wrote
}

// Collect sends the counters as they are now.
func (s *storageStats) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(s.wrote, prometheus.CounterValue, float64(procio.WriteBytes()))
	st := s.st.Load()
	if st == nil {
		return
	}
	x := st.Stats()
	ch <- prometheus.MustNewConstMetric(s.syncs, prometheus.CounterValue, float64(x.Syncs))
	ch <- prometheus.MustNewConstMetric(s.checkpoints, prometheus.CounterValue, float64(x.Checkpoints))
	ch <- prometheus.MustNewConstMetric(s.journal, prometheus.CounterValue, float64(x.JournalBytes))
}

// NewMetrics registers every metric with a new registry.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg, Metrics: ingest.NewMetrics(reg)}
	m.BatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_commit_batch_size",
		Help: "Operations per group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 11)})
	m.CommitTx = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_commit_transaction_seconds",
		Help: "Time of one group commit: its operations and its durable write (the journal record and its fsync, or a checkpoint).", Buckets: prometheus.ExponentialBuckets(1e-5, 2, 18)})
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
	m.Refused = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_devices_refused",
		Help: "Entries of the device registry not loaded (a bad key, an unknown account, provider or tariff): those devices are refused, the rest serve."})
	m.LateTickets = prometheus.NewCounter(prometheus.CounterOpts{Name: "farthing_late_tickets_total",
		Help: "Tickets whose time fell in a window that had sealed (a device's backlog), folded into corrections: one per window touched per corrections.fold."})
	m.Grants = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_grants_total",
		Help: "Grants made or extended (granted) and ended (released, expired, idle)."}, []string{"event"})
	m.GrantNanos = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_grant_nanos_total",
		Help: "Nanos reserved by grants (granted) and given back when they ended (released, expired, idle); charges under grants are in the tickets."}, []string{"event"})
	for _, e := range []string{"granted", "released", "expired", "idle"} {
		m.Grants.WithLabelValues(e)
		m.GrantNanos.WithLabelValues(e)
	}
	m.GrantsOpen = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_grants_open", Help: "Grants open: devices that may serve against a reservation."})
	m.Reserved = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_reserved_nanos",
		Help: "Nanos the open grants reserve: in the accounts' balances, not available to spend (every currency together; per account in farthing account show)."})
	m.Commands = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_commands_total",
		Help: "Control commands received, by action, outcome (applied, refused, duplicate, not_yet, malformed, not_ours) and reason."}, []string{"action", "outcome", "reason"})
	for _, a := range []string{protocol.ActionTariffSet, protocol.ActionAdjust, protocol.ActionRevokeVoucher, protocol.ActionRevokeDevice, protocol.ActionProvision} {
		m.Commands.WithLabelValues(a, "applied", protocol.ReasonNone.String())
	}
	m.Clock = newClockMetrics(reg)
	m.Storage = newStorageStats()
	reg.MustRegister(m.Storage, m.Commands, m.Refused, m.LateTickets, m.Grants, m.GrantNanos, m.GrantsOpen, m.Reserved, m.BatchSize, m.CommitTx, m.StoreBytes, m.StoreInUse, m.DiskFree, m.StoreWarning, m.OldestSealed, m.Sealed,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
