package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway/operator"
)

// operatorFlags are the flags of the commands that ask a running daemon's
// operator API: by default its Unix socket in the data directory; with
// --operator, its TCP listener over TLS with a token or a certificate.
type operatorFlags struct {
	url, tokenFile, caFile, certFile, keyFile *string
}

func addOperatorFlags(fs *flag.FlagSet) *operatorFlags {
	return &operatorFlags{
		url:       fs.String("operator", "", "the operator API's https://HOST:PORT (default: the Unix socket in the data directory)"),
		tokenFile: fs.String("token-file", "", "file holding the operator API's bearer token (with --operator)"),
		caFile:    fs.String("ca-file", "", "CA certificate (PEM) that issued the operator API's certificate (with --operator)"),
		certFile:  fs.String("cert-file", "", "client certificate (PEM) for the operator API (with --operator)"),
		keyFile:   fs.String("key-file", "", "client certificate's key (PEM) (with --operator)"),
	}
}

// errNoDaemon: no daemon answers on the data directory's socket.
var errNoDaemon = errors.New("no running daemon")

// getJSON asks the operator API for path and decodes the JSON answer into
// v. Without --operator and without a daemon it returns errNoDaemon, so
// the caller can read the state file itself.
func (o *operatorFlags) getJSON(data, path string, v any) error {
	return o.do(data, http.MethodGet, path, nil, v)
}

// postJSON sends body as JSON to the operator API and decodes the answer
// into v. There is no fallback to the state file: a change needs the
// running daemon.
func (o *operatorFlags) postJSON(data, path string, body, v any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return o.do(data, http.MethodPost, path, b, v)
}

func (o *operatorFlags) do(data, method, path string, body []byte, v any) error {
	c, base, err := o.client(data)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		if *o.url == "" {
			return fmt.Errorf("%w: %v", errNoDaemon, err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("operator API: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(v)
}

func (o *operatorFlags) client(data string) (*http.Client, string, error) {
	if *o.url == "" {
		sock := filepath.Join(data, operator.Socket)
		if _, err := os.Stat(sock); err != nil {
			return nil, "", fmt.Errorf("%w: %v", errNoDaemon, err)
		}
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}, "http://farthingd", nil
	}
	if !strings.HasPrefix(*o.url, "https://") {
		return nil, "", usageError{"--operator must be an https:// URL: the operator API speaks TLS only"}
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if *o.caFile != "" {
		pem, err := os.ReadFile(*o.caFile)
		if err != nil {
			return nil, "", err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("%s: no certificate", *o.caFile)
		}
	}
	if *o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(*o.certFile, *o.keyFile)
		if err != nil {
			return nil, "", err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	var tr http.RoundTripper = &http.Transport{TLSClientConfig: tc}
	if *o.tokenFile != "" {
		b, err := os.ReadFile(*o.tokenFile)
		if err != nil {
			return nil, "", err
		}
		tr = bearer{token: strings.TrimSpace(string(b)), next: tr}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, strings.TrimRight(*o.url, "/"), nil
}

// bearer adds the operator token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
