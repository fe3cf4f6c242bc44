package coaps_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/farthing-iot/farthing/gateway/coaps"
	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/protocol"
)

// The server hands the authenticated identity and the body to the
// handler, and maps each receipt status to its CoAP code; requests that
// are not a ticket POST never reach the handler.
func TestServerMapsStatusesAndRefusesNonTickets(t *testing.T) {
	psk := []byte("0123456789abcdef")
	var mu sync.Mutex
	var seen []string
	statusOf := map[string]protocol.Status{"ok": protocol.StatusAccepted, "dup": protocol.StatusDuplicate, "bad": protocol.StatusRejected,
		"poor": protocol.StatusInsufficientFunds, "later": protocol.StatusRetryLater}
	s, err := coaps.Listen(coaps.Config{Listen: "127.0.0.1:0",
		PSK: func(id string) ([]byte, bool) { return psk, id == "dev-1" },
		Handle: func(_ context.Context, m entrance.Message) entrance.Reply {
			mu.Lock()
			seen = append(seen, m.Device+"/"+string(m.Payload))
			mu.Unlock()
			return func() entrance.Answer {
				return entrance.Answer{Receipt: []byte("receipt"), Status: statusOf[string(m.Payload)], RetryAfter: 7 * time.Second}
			}
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	cc, err := coapdtls.Dial(s.Addr().String(), coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }), piondtls.WithPSKIdentityHint([]byte("dev-1")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	for body, want := range map[string]codes.Code{"ok": codes.Changed, "dup": codes.Changed, "bad": codes.BadRequest,
		"poor": codes.Forbidden, "later": codes.ServiceUnavailable} {
		resp, err := cc.Post(rctx, "/t", coaps.ContentFormatMac0, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != want {
			t.Errorf("%s: %v; want %v", body, resp.Code(), want)
		}
		if cf, _ := resp.ContentFormat(); cf != coaps.ContentFormatMac0 {
			t.Errorf("%s: receipt content format %v", body, cf)
		}
		if body == "later" {
			if ma, err := resp.Options().GetUint32(message.MaxAge); err != nil || ma != 7 {
				t.Errorf("retry later: Max-Age %d, %v; want 7", ma, err)
			}
		}
	}
	for _, tc := range []struct {
		do   func() (codes.Code, error)
		want codes.Code
	}{
		{func() (codes.Code, error) {
			r, err := cc.Post(rctx, "/t", message.TextPlain, bytes.NewReader([]byte("ok")))
			return code(r, err)
		}, codes.UnsupportedMediaType},
		{func() (codes.Code, error) { r, err := cc.Get(rctx, "/t"); return code(r, err) }, codes.MethodNotAllowed},
		{func() (codes.Code, error) {
			r, err := cc.Post(rctx, "/elsewhere", coaps.ContentFormatMac0, bytes.NewReader([]byte("ok")))
			return code(r, err)
		}, codes.NotFound},
		{func() (codes.Code, error) {
			r, err := cc.Post(rctx, "/t", coaps.ContentFormatMac0, bytes.NewReader(make([]byte, protocol.MaxTicketSize+1)))
			return code(r, err)
		}, codes.RequestEntityTooLarge},
	} {
		got, err := tc.do()
		if err != nil || got != tc.want {
			t.Errorf("got %v, %v; want %v", got, err, tc.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 5 {
		t.Fatalf("handler saw %d tickets (%v); want the 5 ticket POSTs only", len(seen), seen)
	}
	for _, s := range seen {
		if s[:6] != "dev-1/" {
			t.Fatalf("handler was handed %q: not the authenticated identity", s)
		}
	}
}

func code(r interface{ Code() codes.Code }, err error) (codes.Code, error) {
	if err != nil {
		return 0, err
	}
	return r.Code(), nil
}
