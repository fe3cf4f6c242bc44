package httpsink_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/farthing-iot/farthing/gateway/upstream"
	"github.com/farthing-iot/farthing/gateway/upstream/httpsink"
)

// The sink posts the aggregate's bytes with its idempotency key, the COSE
// content type and the configured headers; only a 2xx confirms.
func TestSinkConfirmsOnlyOn2xx(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	var got struct {
		body, key, ctype, auth string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.body, got.key, got.ctype, got.auth = string(b), r.Header.Get("Idempotency-Key"), r.Header.Get("Content-Type"), r.Header.Get("Authorization")
		w.WriteHeader(int(status.Load()))
		io.WriteString(w, "receiver says so")
	}))
	defer srv.Close()
	s := httpsink.New(httpsink.Config{URL: srv.URL, Header: http.Header{"Authorization": {"Bearer t0ken"}}})
	a := upstream.Outgoing{Seq: 7, Gateway: "gw-1", Provider: "p", Key: "0102030405060708.9/7", Bytes: []byte("\xd2aggregate")}
	if err := s.Send(context.Background(), a); err != nil {
		t.Fatalf("Send on 200: %v", err)
	}
	if got.body != string(a.Bytes) || got.key != a.Key || got.ctype != upstream.ContentType || got.auth != "Bearer t0ken" {
		t.Fatalf("posted %+v", got)
	}
	for _, code := range []int{http.StatusConflict, http.StatusServiceUnavailable, http.StatusFound} {
		status.Store(int32(code))
		if err := s.Send(context.Background(), a); err == nil || !strings.Contains(err.Error(), "receiver says so") {
			t.Errorf("Send on %d: %v; want an error carrying the answer", code, err)
		}
	}
	srv.Close()
	if err := s.Send(context.Background(), a); err == nil {
		t.Error("Send to a closed server succeeded")
	}
}
