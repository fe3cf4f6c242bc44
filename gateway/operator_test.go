package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/operator"
)

// socketClient is an HTTP client of the operator API's Unix socket.
func socketClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}}
}

func getBody(t *testing.T, c *http.Client, url string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestOperatorAPIIsOffTheMetricsListener: the metrics listener serves
// /metrics, /healthz and /readyz only; /inspect and /proof answer on the
// operator socket (mode 0600); pprof is nowhere unless enabled.
func TestOperatorAPIIsOffTheMetricsListener(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}})
	d := connectDevice(t, tg, "plug-1")
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 5}})
	d.next(t)
	base := "http://" + tg.HTTPAddr()
	for _, p := range []string{"/inspect", "/proof?ticket=plug-1/1", "/debug/pprof/", "/debug/pprof/goroutine?debug=2"} {
		if code, _ := httpGet(t, base+p); code != http.StatusNotFound {
			t.Errorf("metrics listener %s = %d; want 404", p, code)
		}
	}
	sock := filepath.Join(tg.cfg.DataDir, operator.Socket)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("operator socket mode %v; want a socket, 0600", fi.Mode())
	}
	c := socketClient(sock)
	if code, body := getBody(t, c, "http://farthingd/inspect"); code != 200 || !strings.Contains(body, `"balanced":true`) {
		t.Fatalf("socket /inspect = %d %q", code, body)
	}
	if code, body := getBody(t, c, "http://farthingd/proof?ticket=plug-1/1"); code != 200 && code != 404 {
		t.Fatalf("socket /proof = %d %q", code, body)
	}
	if code, _ := getBody(t, c, "http://farthingd/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof on the socket while disabled = %d; want 404", code)
	}
	// Clients that never close their connections do not use up the API's
	// capped connections: each request has its own.
	for i := 0; i < 50; i++ {
		if code, _ := getBody(t, socketClient(sock), "http://farthingd/inspect"); code != 200 {
			t.Fatalf("request %d from a fresh client = %d", i, code)
		}
	}
}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, all made for the test.
type testPKI struct {
	caPEM, serverCert, serverKey, clientCert, clientKey string
}

func makePKI(t *testing.T, dir string) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "farthing test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kb)
	}
	var p testPKI
	p.caPEM = write("ca.crt", "CERTIFICATE", caDER)
	p.serverCert, p.serverKey = leaf("gateway", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("operator-anna", 3, x509.ExtKeyUsageClientAuth)
	return p
}

// TestOperatorAPIOverTLS: on TCP the API speaks TLS only and answers only
// a request with the bearer token or a client certificate from its CA;
// pprof is there when enabled; a token file others can read is refused.
func TestOperatorAPIOverTLS(t *testing.T) {
	dir := t.TempDir()
	pki := makePKI(t, dir)
	token := "s3cret-operator-token-0123456789"
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}}, func(c *gateway.Config) {
		c.Operator = operator.Config{Listen: "127.0.0.1:0", CertFile: pki.serverCert, KeyFile: pki.serverKey,
			TokenFile: tokenFile, ClientCAFile: pki.caPEM, Pprof: true}
	})
	base := "https://" + tg.OperatorAddr()
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(pki.caPEM)
	pool.AppendCertsFromPEM(caPEM)
	anon := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if code, _ := getBody(t, anon, base+"/inspect"); code != http.StatusUnauthorized {
		t.Fatalf("/inspect without a credential = %d; want 401", code)
	}
	if code, _ := getBody(t, anon, base+"/inspect", "Authorization", "Bearer wrong-token-wrong-token"); code != http.StatusUnauthorized {
		t.Fatalf("/inspect with a wrong token = %d; want 401", code)
	}
	if code, body := getBody(t, anon, base+"/inspect", "Authorization", "Bearer "+token); code != 200 || !strings.Contains(body, `"balanced":true`) {
		t.Fatalf("/inspect with the token = %d %q", code, body)
	}
	// A top-up without a credential is refused and changes nothing.
	resp, err := anon.Post(base+"/accounts/prepaid-1/topups", "application/json", strings.NewReader(`{"amount":"5.00 EUR","ref":"p1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("top-up without a credential = %d; want 401", resp.StatusCode)
	}
	if code, body := getBody(t, anon, base+"/accounts/prepaid-1", "Authorization", "Bearer "+token); code != 200 || !strings.Contains(body, `"balance_nanos":10000000000`) {
		t.Fatalf("account after the refused top-up = %d %s; want the opening 10 EUR", code, body)
	}
	if code, _ := getBody(t, anon, base+"/debug/pprof/cmdline", "Authorization", "Bearer "+token); code != 200 {
		t.Fatalf("pprof enabled, with the token = %d; want 200", code)
	}
	cert, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	if code, _ := getBody(t, withCert, base+"/inspect"); code != 200 {
		t.Fatalf("/inspect with a client certificate = %d; want 200", code)
	}
	if code, _ := getBody(t, http.DefaultClient, "http://"+tg.OperatorAddr()+"/inspect", "Authorization", "Bearer "+token); code == 200 {
		t.Fatal("the TCP operator API answered plain HTTP")
	}
	if !strings.Contains(metricsText(t, tg), `farthing_transport_events_total{event="unauthorized",transport="operator"} 3`) {
		t.Fatal("refused operator requests were not counted")
	}

	// A token readable by others, or TCP without TLS or credentials: the
	// daemon does not start.
	os.Chmod(tokenFile, 0o644)
	cfg := *tg.cfg
	cfg.DataDir = t.TempDir()
	cfg.MQTT.Listen, cfg.DTLS.Listen, cfg.HTTP.Listen = freePort(t), "off", "off"
	cfg.KeyFile = filepath.Join(cfg.DataDir, "gateway.key")
	cfg.Operator.Socket = "" // its own data directory's
	g, err := gateway.New(&cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("Run with a 0644 token file: %v; want a refusal naming 0600", err)
	}
	for _, bad := range []operator.Config{{Listen: "127.0.0.1:0"}, {Listen: "127.0.0.1:0", CertFile: pki.serverCert, KeyFile: pki.serverKey}} {
		path := filepath.Join(t.TempDir(), "farthingd.yaml")
		y := "operator: {listen: " + bad.Listen + ", cert_file: '" + bad.CertFile + "', key_file: '" + bad.KeyFile + "'}\n"
		os.WriteFile(path, []byte(y), 0o600)
		if _, err := gateway.LoadConfig(path); err == nil {
			t.Fatalf("config %q accepted: a TCP operator API without TLS or credentials", y)
		}
	}
}
