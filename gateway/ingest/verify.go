package ingest

import (
	"crypto/ed25519"
	"runtime"
	"sync"

	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// edBatcher verifies the Ed25519 signatures of tickets that arrive at the
// same time in batches (see strict.Ed25519Batch for the rule, ZIP-215, and
// the fallback that makes a batch's answers those of single verification).
//
// It has no goroutines of its own. A caller queues its signature; if no
// caller is verifying, it becomes the one: it takes up to maxBatch waiting
// signatures, verifies them together, answers them, and goes on until
// nothing waits. Otherwise it waits for its answer. So a lone ticket never
// waits for company, and under load the signatures that arrive while one
// batch is verified make the next. More callers (up to one per core) join
// only while a full batch or more is waiting: one verifying core handles
// far more signatures per second than the rest of the pipeline.
type edBatcher struct {
	mu      sync.Mutex
	queue   []*edRequest
	active  int // callers verifying
	workers int // at most this many
	pool    sync.Pool
	observe func(n int) // batch sizes, for metrics; may be nil
}

type edRequest struct {
	pub      ed25519.PublicKey
	msg, sig []byte
	ok       bool
	done     chan struct{}
}

const maxBatch = 64

func newEdBatcher(observe func(n int)) *edBatcher {
	b := &edBatcher{workers: runtime.GOMAXPROCS(0), observe: observe}
	b.pool.New = func() any { return &edRequest{done: make(chan struct{}, 1)} }
	return b
}

// Verify reports whether sig is a valid signature of msg by pub. The slices
// are only read, and only until Verify returns.
func (b *edBatcher) Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	r := b.pool.Get().(*edRequest)
	r.pub, r.msg, r.sig = pub, msg, sig
	b.mu.Lock()
	b.queue = append(b.queue, r)
	if b.active == 0 || (b.active < b.workers && len(b.queue) >= maxBatch) {
		b.active++
		b.drain() // unlocks
	} else {
		b.mu.Unlock()
	}
	<-r.done
	ok := r.ok
	r.pub, r.msg, r.sig = nil, nil, nil
	b.pool.Put(r)
	return ok
}

// drain verifies batches until the queue is empty. It is called with mu
// held and returns with it released.
func (b *edBatcher) drain() {
	var batch strict.Ed25519Batch
	var reqs [maxBatch]*edRequest
	var ok [maxBatch]bool
	for len(b.queue) > 0 {
		n := copy(reqs[:], b.queue)
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		b.mu.Unlock()
		if b.observe != nil {
			b.observe(n)
		}
		if n == 1 {
			ok[0] = strict.VerifyEd25519(reqs[0].pub, reqs[0].msg, reqs[0].sig)
		} else {
			for _, r := range reqs[:n] {
				batch.Add(r.pub, r.msg, r.sig)
			}
			batch.Verify(ok[:n])
		}
		for i, r := range reqs[:n] {
			r.ok = ok[i]
			r.done <- struct{}{}
		}
		b.mu.Lock()
	}
	b.active--
	b.mu.Unlock()
}

// tbsPool holds buffers for the bytes a ticket's signature covers.
var tbsPool = sync.Pool{New: func() any { b := make([]byte, 0, protocol.MaxTicketSize+64); return &b }}

// verify checks a message's MAC or signature with the device's key.
// Ed25519 signatures go through the batcher (ZIP-215, the gateway's one
// rule); HMAC state is made per message, as it is not safe to share.
func (in *Ingest) verify(dev *registry.Device, env *protocol.Envelope) error {
	if (env.Alg == protocol.AlgEdDSA) != (dev.Ed25519Key() != nil) {
		return &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "ticket uses " + env.Alg.String() + ", the device's key is " + dev.KeyType}
	}
	bp := tbsPool.Get().(*[]byte)
	defer tbsPool.Put(bp)
	tbs := protocol.AppendToBeSigned((*bp)[:0], env.Alg, env.Protected, env.Payload)
	*bp = tbs[:0]
	if env.Alg == protocol.AlgEdDSA {
		if !in.ed.Verify(dev.Ed25519Key(), tbs, env.Signature) {
			return protocol.ErrBadSignature
		}
		return nil
	}
	v, err := dev.NewVerifier()
	if err != nil {
		return err
	}
	if v.Verify(tbs, env.Signature) != nil {
		return protocol.ErrBadSignature
	}
	return nil
}
