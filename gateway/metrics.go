package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/protocol"
)

// Metrics are the gateway's Prometheus metrics. Every refusal is counted
// by its reason code.
type Metrics struct {
	Registry *prometheus.Registry

	Tickets      *prometheus.CounterVec   // by status and reason
	Verify       prometheus.Histogram     // seconds to decode and verify
	VerifyBatch  prometheus.Histogram     // Ed25519 signatures per batch verification
	Commit       prometheus.Histogram     // seconds from queueing to durable
	BatchSize    prometheus.Histogram     // operations per commit
	CommitTx     prometheus.Histogram     // seconds per write transaction, fsync included
	StoreBytes   prometheus.Gauge         // state file size
	StoreInUse   prometheus.Gauge         // state file bytes that hold data (the rest is free pages, reused)
	DiskFree     prometheus.Gauge         // free bytes on the data directory's file system
	StoreWarning prometheus.Gauge         // 1 while the state file is above limits.warn_store_bytes
	OldestSealed prometheus.Gauge         // age in seconds of the oldest aggregate not yet forwarded
	Sealed       *prometheus.CounterVec   // windows sealed, by reason
	Transport    *prometheus.CounterVec   // transport events, by transport and event
	Fraud        *prometheus.CounterVec   // signs of clones and suspensions, by event
	Latency      *prometheus.HistogramVec // end to end per transport, seconds
	LowBalance   *prometheus.CounterVec   // receipts with the low-balance flag, by account
}

// NewMetrics registers the metrics on a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.Tickets = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_tickets_total",
		Help: "Tickets by receipt status and reason."}, []string{"status", "reason"})
	m.Verify = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_verify_seconds",
		Help: "Time to decode and verify a ticket.", Buckets: prometheus.ExponentialBuckets(1e-6, 2, 16)})
	m.VerifyBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_verify_batch_size",
		Help: "Ed25519 signatures verified together (1: alone).", Buckets: prometheus.ExponentialBuckets(1, 2, 7)})
	m.Commit = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_commit_seconds",
		Help: "Time from queueing a ticket to its durable commit.", Buckets: prometheus.ExponentialBuckets(1e-5, 2, 18)})
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
	m.Registry.MustRegister(m.StoreInUse, m.DiskFree, m.StoreWarning)
	m.OldestSealed = prometheus.NewGauge(prometheus.GaugeOpts{Name: "farthing_oldest_unforwarded_seconds",
		Help: "Age of the oldest sealed aggregate not yet confirmed upstream."})
	m.Sealed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_windows_sealed_total",
		Help: "Aggregation windows sealed, by reason (time, threshold, correction)."}, []string{"reason"})
	m.Transport = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_transport_events_total",
		Help: "Transport events (connections, refusals), by transport and event."}, []string{"transport", "event"})
	m.Latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "farthing_ticket_seconds",
		Help: "Time from a ticket's arrival to its receipt, by transport.", Buckets: prometheus.ExponentialBuckets(1e-5, 2, 18)}, []string{"transport"})
	m.LowBalance = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_low_balance_receipts_total",
		Help: "Receipts that carried the low-balance flag: the account is below its low_balance level."}, []string{"account"})
	m.Registry.MustRegister(m.LowBalance)
	m.Fraud = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_fraud_events_total",
		Help: "Signs of cloned devices, suspected clones and devices suspended, by event."}, []string{"event"})
	m.Registry.MustRegister(m.Fraud)
	for _, e := range []string{SignTakeover, SignDTLS, SignSuperseded, "clone_suspected", "suspended_holds", "suspended_clone"} {
		m.Fraud.WithLabelValues(e)
	}
	m.Registry.MustRegister(m.Tickets, m.Verify, m.VerifyBatch, m.Commit, m.BatchSize, m.CommitTx, m.StoreBytes, m.OldestSealed, m.Sealed, m.Transport, m.Latency,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	// Pre-create every reason so dashboards see zeros, not gaps.
	for _, r := range protocol.Reasons() {
		st := protocol.StatusRejected
		switch {
		case r.Transient():
			st = protocol.StatusRetryLater
		case r == protocol.ReasonSuperseded:
			st = protocol.StatusDuplicate
		case r == protocol.ReasonSpendingCap:
			st = protocol.StatusInsufficientFunds
		}
		if r != protocol.ReasonNone {
			m.Tickets.WithLabelValues(st.String(), r.String())
		}
	}
	for _, r := range protocol.HoldRules {
		m.Tickets.WithLabelValues(protocol.StatusHeld.String(), r.String())
	}
	return m
}
