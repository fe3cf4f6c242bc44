package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/protocol"
)

// Metrics are what the pipeline counts and times. Every label a series
// can take is made at registration, so a dashboard sees zeros, not gaps.
type Metrics struct {
	Tickets     *prometheus.CounterVec   // by status and reason
	Verify      prometheus.Histogram     // seconds to decode and verify
	VerifyBatch prometheus.Histogram     // Ed25519 signatures per batch verification
	Commit      prometheus.Histogram     // seconds from queueing to durable
	Transport   *prometheus.CounterVec   // transport events (vouchers here; connections and refusals by the transports), by transport and event
	Fraud       *prometheus.CounterVec   // signs of clones and suspensions, by event
	Latency     *prometheus.HistogramVec // end to end per transport, seconds
	LowBalance  *prometheus.CounterVec   // receipts with the low-balance flag, by account
	ClockSkew   *prometheus.CounterVec   // tickets refused clock_skew, by the direction the device's clock was off
	// GrantRequests counts grant requests and releases by kind, status
	// and reason.
	GrantRequests *prometheus.CounterVec
}

// NewMetrics makes the pipeline's metrics and registers them with reg
// (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	m.Tickets = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_tickets_total",
		Help: "Tickets by receipt status and reason."}, []string{"status", "reason"})
	m.Verify = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_verify_seconds",
		Help: "Time to decode and verify a ticket.", Buckets: prometheus.ExponentialBuckets(1e-6, 2, 16)})
	m.VerifyBatch = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_verify_batch_size",
		Help: "Ed25519 signatures verified together (1: alone).", Buckets: prometheus.ExponentialBuckets(1, 2, 7)})
	m.Commit = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "farthing_commit_seconds",
		Help: "Time from queueing a ticket to its durable commit.", Buckets: prometheus.ExponentialBuckets(1e-5, 2, 18)})
	m.Transport = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_transport_events_total",
		Help: "Transport events (connections, refusals), by transport and event."}, []string{"transport", "event"})
	m.Latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "farthing_ticket_seconds",
		Help: "Time from a ticket's arrival to its receipt, by transport.", Buckets: prometheus.ExponentialBuckets(1e-5, 2, 18)}, []string{"transport"})
	m.LowBalance = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_low_balance_receipts_total",
		Help: "Receipts that carried the low-balance flag: the account is below its low_balance level."}, []string{"account"})
	m.ClockSkew = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_clock_skew_refusals_total",
		Help: "Tickets refused clock_skew, by whether the device's clock was ahead of the gateway's or behind it: most devices one way points at the gateway's clock."},
		[]string{"direction"})
	m.GrantRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_grant_requests_total",
		Help: "Grant requests and releases from devices, by kind, receipt status and reason."}, []string{"kind", "status", "reason"})
	for _, k := range []protocol.Kind{protocol.KindGrantRequest, protocol.KindRelease} {
		m.GrantRequests.WithLabelValues(k.String(), protocol.StatusAccepted.String(), "")
	}
	m.GrantRequests.WithLabelValues(protocol.KindGrantRequest.String(), protocol.StatusInsufficientFunds.String(), "")
	m.Fraud = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "farthing_fraud_events_total",
		Help: "Signs of cloned devices, suspected clones and devices suspended, by event."}, []string{"event"})
	for _, e := range []string{SignTakeover, SignDTLS, SignSuperseded, "clone_suspected", "suspended_holds", "suspended_clone"} {
		m.Fraud.WithLabelValues(e)
	}
	for _, r := range protocol.Reasons() {
		if r != protocol.ReasonNone {
			m.Tickets.WithLabelValues(statusOf(r).String(), r.String())
		}
	}
	for _, r := range protocol.HoldRules {
		m.Tickets.WithLabelValues(protocol.StatusHeld.String(), r.String())
	}
	if reg != nil {
		reg.MustRegister(m.Tickets, m.Verify, m.VerifyBatch, m.Commit, m.Transport, m.Latency, m.LowBalance, m.Fraud, m.ClockSkew, m.GrantRequests)
	}
	return m
}

// statusOf is the status a receipt with reason r has.
func statusOf(r protocol.Reason) protocol.Status {
	switch {
	case r.Transient():
		return protocol.StatusRetryLater
	case r == protocol.ReasonSuperseded:
		return protocol.StatusDuplicate
	case r == protocol.ReasonSpendingCap:
		return protocol.StatusInsufficientFunds
	}
	return protocol.StatusRejected
}
