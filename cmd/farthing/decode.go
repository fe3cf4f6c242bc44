package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// maxInput bounds what decode and verify read: a message in hex with
// whitespace fits easily.
const maxInput = 4 * protocol.MaxCommandSize

// readMessage reads one message from the file or stdin ("" or "-"), as
// binary or as hex text (whitespace ignored).
func readMessage(e *env, path string) ([]byte, error) {
	r := e.stdin
	name := "stdin"
	if path != "" && path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r, name = f, path
	}
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInput {
		return nil, fmt.Errorf("%s: more than %d bytes: not a Farthing message", name, maxInput)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s: empty", name)
	}
	if h := bytes.Join(bytes.Fields(b), nil); len(h)%2 == 0 && isHex(h) {
		b = make([]byte, len(h)/2)
		hex.Decode(b, h)
	}
	return b, nil
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return len(b) > 0
}

// decoded is decode's JSON output.
type decoded struct {
	Kind      string              `json:"kind"`
	COSE      string              `json:"cose"`
	Alg       string              `json:"alg"`
	KeyID     string              `json:"kid"`
	Size      int                 `json:"size"`
	Ticket    *protocol.Ticket    `json:"ticket,omitempty"`
	Receipt   *protocol.Receipt   `json:"receipt,omitempty"`
	Aggregate *protocol.Aggregate `json:"aggregate,omitempty"`
	// A payword chain's commitment, and a payword ticket (which has no
	// COSE envelope: the payword is its own proof).
	Commitment *protocol.Commitment    `json:"commitment,omitempty"`
	Payword    *protocol.PaywordTicket `json:"payword,omitempty"`
	// A device's grant request or release.
	GrantRequest *protocol.GrantRequest `json:"grant_request,omitempty"`
	Release      *protocol.Release      `json:"release,omitempty"`
	// A provider's command and a gateway's acknowledgement of one.
	Command    *protocol.Command    `json:"command,omitempty"`
	CommandAck *protocol.CommandAck `json:"command_ack,omitempty"`
	Signature  string               `json:"signature,omitempty"`
	Diag       string               `json:"diag"`
}

// runDecode prints a message as JSON, with its CBOR diagnostic notation.
// A message the gateway would refuse is an error; its diagnostic notation
// is still printed if it is well-formed CBOR.
func runDecode(e *env, args []string) error {
	fs := newFlags("decode")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	b, err := readMessage(e, fs.Arg(0))
	if err != nil {
		return err
	}
	diag, derr := strict.Diagnose(b)
	if out, ok, err := decodePayword(b, diag); ok {
		if err != nil {
			if derr == nil {
				fmt.Fprintln(e.stdout, diag)
			}
			return err
		}
		return printDecoded(e, out)
	}
	m, err := strict.Decode(b)
	if err != nil {
		if derr == nil {
			fmt.Fprintln(e.stdout, diag)
		}
		return err
	}
	out := decoded{
		Kind: m.Kind.String(), COSE: coseName(m.Envelope.Alg), Alg: m.Envelope.Alg.String(),
		KeyID: hex.EncodeToString(m.Envelope.KeyID), Size: len(b),
		Ticket: m.Ticket, Receipt: m.Receipt, Aggregate: m.Aggregate, GrantRequest: m.GrantRequest, Release: m.Release,
		Command: m.Command, CommandAck: m.CommandAck,
		Signature: hex.EncodeToString(m.Envelope.Signature), Diag: diag,
	}
	return printDecoded(e, out)
}

// printDecoded writes decode's JSON, diagnostic notation unescaped.
func printDecoded(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// decodePayword decodes b if it is a payword ticket or a chain
// commitment; ok is false for any other message.
func decodePayword(b []byte, diag string) (decoded, bool, error) {
	if protocol.IsPaywordTicket(b) {
		var p protocol.PaywordTicket
		if err := protocol.ParsePaywordTicket(b, &p); err != nil {
			return decoded{}, true, err
		}
		return decoded{Kind: protocol.KindPayword.String(), COSE: "none", Size: len(b), Payword: &p, Diag: diag}, true, nil
	}
	if k, ok := protocol.KindOf(b); !ok || k != protocol.KindCommitment {
		return decoded{}, false, nil
	}
	var env protocol.Envelope
	var c protocol.Commitment
	if err := protocol.ParseCommitment(b, &env, &c); err != nil {
		return decoded{}, true, err
	}
	return decoded{Kind: protocol.KindCommitment.String(), COSE: coseName(env.Alg), Alg: env.Alg.String(),
		KeyID: hex.EncodeToString(env.KeyID), Size: len(b), Commitment: &c, Signature: hex.EncodeToString(env.Signature), Diag: diag}, true, nil
}

func coseName(a protocol.Algorithm) string {
	if a.Tag() == protocol.TagMac0 {
		return "COSE_Mac0"
	}
	return "COSE_Sign1"
}

// runVerify checks a message's signature with a key file.
func runVerify(e *env, args []string) error {
	fs := newFlags("verify")
	pub := fs.String("pub", "", "key file: ed25519 public or private key, or the device's hmac master secret")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if *pub == "" {
		return usageError{"--pub is required"}
	}
	k, err := keyfile.Load(*pub)
	if err != nil {
		return err
	}
	b, err := readMessage(e, fs.Arg(0))
	if err != nil {
		return err
	}
	m, err := strict.Decode(b)
	if err != nil {
		return err
	}
	v, err := k.Verifier(m.Kind)
	if err != nil {
		return err
	}
	if v.Algorithm() != m.Envelope.Alg {
		return fmt.Errorf("message is %s, key is %s (%s)", m.Envelope.Alg, v.Algorithm(), k.Kind())
	}
	var kid []byte
	if s, ok := v.(interface{ KeyID() []byte }); ok {
		kid = s.KeyID()
	}
	if !bytes.Equal(kid, m.Envelope.KeyID) {
		return fmt.Errorf("message kid %x is not this key's kid %x", m.Envelope.KeyID, kid)
	}
	if err := m.Envelope.Verify(v, nil); err != nil {
		return fmt.Errorf("%s signature does not verify: %w", m.Kind, err)
	}
	who := ""
	switch {
	case m.Ticket != nil:
		who = fmt.Sprintf("device %s seq %d", m.Ticket.Device, m.Ticket.Seq)
	case m.Receipt != nil:
		who = fmt.Sprintf("for device %s seq %d", m.Receipt.Device, m.Receipt.Seq)
	case m.Aggregate != nil:
		who = fmt.Sprintf("gateway %s seq %d", m.Aggregate.Gateway, m.Aggregate.Seq)
	}
	fmt.Fprintf(e.stdout, "ok: %s %s, %s, kid %x\n", m.Kind, who, m.Envelope.Alg, m.Envelope.KeyID)
	return nil
}

// writeOut writes b to path, or stdout when path is empty.
func writeOut(e *env, path string, b []byte) error {
	if path == "" {
		_, err := e.stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
