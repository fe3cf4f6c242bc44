package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/farthing-iot/farthing/gateway"
)

// issue makes a certificate for cn signed by parent (self-signed if nil).
func issue(t testing.TB, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: ca,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, DNSNames: []string{cn}}
	if ca {
		tmpl.KeyUsage |= x509.KeyUsageCRLSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key, der
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCoAPWithClientCertificate: a device authenticates with an X.509
// certificate whose common name is its id; a certificate from another CA
// is refused.
func TestCoAPWithClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caDER := issue(t, "farthing devices CA", nil, nil, true)
	_, gwKey, gwDER := issue(t, "gateway.local", ca, caKey, false)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	writePEM(t, filepath.Join(dir, "gw.pem"), "CERTIFICATE", gwDER)
	k, _ := x509.MarshalECPrivateKey(gwKey)
	writePEM(t, filepath.Join(dir, "gw.key"), "EC PRIVATE KEY", k)
	tg := startGateway(t, []devSpec{{"evse-9", "ed25519", "fleet"}, {"plug-9", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.DTLS.CertFile, c.DTLS.KeyFile, c.DTLS.ClientCAFile = filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw.key"), filepath.Join(dir, "ca.pem")
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	dial := func(devCert tls.Certificate) (int, error) {
		cc, err := coapdtls.Dial(tg.CoAPAddr(), coapdtls.NewDTLSClientOptions(
			piondtls.WithCertificates(devCert), piondtls.WithRootCAs(roots), piondtls.WithServerName("gateway.local"),
			piondtls.WithCipherSuites(piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8)))
		if err != nil {
			return 0, err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cc.Post(ctx, "/t", 18, bytes.NewReader(signed(t, tg, "evse-9", uint64(time.Now().UnixNano()%1e9+1), 5)))
		if err != nil {
			return 0, err
		}
		return int(resp.Code()), nil
	}
	_, devKey, devDER := issue(t, "evse-9", ca, caKey, false)
	if code, err := dial(tls.Certificate{Certificate: [][]byte{devDER}, PrivateKey: devKey}); err != nil || code != int(codes.Changed) {
		t.Fatalf("device with a CA-issued certificate: %v %v", codes.Code(code), err)
	}
	// Same name, another CA: the handshake fails, nothing is served.
	otherCA, otherKey, _ := issue(t, "someone else", nil, nil, true)
	_, fakeKey, fakeDER := issue(t, "evse-9", otherCA, otherKey, false)
	if err := certHandshake(tg.CoAPAddr(), tls.Certificate{Certificate: [][]byte{fakeDER}, PrivateKey: fakeKey}, roots); err == nil {
		t.Fatal("a certificate from another CA completed a handshake")
	} else {
		t.Logf("certificate from another CA refused: %v", err)
	}
	rep, _ := tg.Books().Inspect(nil)
	if rep.Reconcile.Tickets != 1 {
		t.Fatalf("stored %d tickets; want only the genuine device's", rep.Reconcile.Tickets)
	}
	// PSK devices still work on a listener that also takes certificates.
	cc, err := dialCoAP(t, tg.CoAPAddr(), "plug-9", tg.secrets["plug-9"].DTLSPSK())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if resp := post(t, cc, 17, signed(t, tg, "plug-9", 1, 1)); resp.Code() != codes.Changed {
		t.Fatalf("PSK device next to certificates: %v", resp.Code())
	}
}

// certHandshake makes one DTLS handshake with a client certificate from a
// fresh socket, under a 5 s deadline.
func certHandshake(addr string, cert tls.Certificate, roots *x509.CertPool) error {
	return handshake(addr, 5*time.Second, piondtls.WithCertificates(cert), piondtls.WithRootCAs(roots),
		piondtls.WithServerName("gateway.local"), piondtls.WithCipherSuites(piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8))
}
