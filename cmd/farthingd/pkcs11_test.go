package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/pkcs11key"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/internal/softhsm"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// TestDaemonSignsWithAKeyInSoftHSM: farthingd's key is made in a SoftHSM2
// token and never leaves it (key_pkcs11): no key file is written, the
// daemon signs its aggregates in the token, and a receiver that trusts
// the token's public key books them.
func TestDaemonSignsWithAKeyInSoftHSM(t *testing.T) {
	tok, err := softhsm.New(t.TempDir(), "farthing-gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	p11 := pkcs11key.Config{Module: softhsm.Module, Token: tok.Label, Key: "gateway", PINFile: tok.PINFile}
	pub, err := pkcs11key.Generate(p11)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := (&keyfile.Key{Public: pub}).EncodePublic()
	trust := filepath.Join(t.TempDir(), "gateway-hsm.pub")
	os.WriteFile(trust, pubPEM, 0o644)
	recvAddr := freeAddr(t, "tcp")
	recv := startReceiverAt(t, recvAddr, trust)
	g := newGatewayDir(t, []string{"meter-1"}, "", fmt.Sprintf(`key_pkcs11: {module: %s, token_label: %s, key_label: gateway, pin_file: %s}
upstreams:
  - {name: books, type: http, url: "http://%s/aggregates"}
forward: {backoff_min: 20ms, backoff_max: 200ms}
`, softhsm.Module, tok.Label, tok.PINFile, recvAddr))
	cmd := exec.Command(buildDaemon(t), "--config", g.config)
	cmd.Env = append(os.Environ(), tok.Env())
	d := startDaemonCmd(t, cmd, g.config, g.mqtt)
	defer d.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := dialDevice(ctx, g, "meter-1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	for range 3 {
		if r := dev.report(t); r.Status != protocol.StatusAccepted {
			t.Fatalf("ticket: %+v", r)
		}
	}
	waitReport(t, []*receiverProc{recv}, func(rep *provider.Report) bool {
		return rep.Stats.Accepted > 0 && len(rep.Totals) > 0 && rep.Totals[0].Amount == 600_000_000
	})
	if _, err := os.Stat(filepath.Join(g.data, "gateway.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a private key file was written beside the token: %v", err)
	}
	written, err := keyfile.Load(filepath.Join(g.data, "gateway.key.pub"))
	if err != nil || !written.Public.Equal(pub) {
		t.Fatalf("the public key written for receivers: %v", err)
	}
}
