package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
)

// runKeygen writes a new key: an Ed25519 pair (NAME.key 0600, NAME.pub) or
// an HMAC master secret (NAME.secret 0600). It never overwrites a file.
func runKeygen(e *env, args []string) error {
	fs := newFlags("keygen")
	typ := fs.String("type", "", "ed25519 or hmac")
	out := fs.String("out", "", "directory to write the key files to")
	name := fs.String("name", "device", "file name stem")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"--out is required"}
	}
	if !protocol.ValidName(*name, 64) {
		return usageError{fmt.Sprintf("--name %q: use 1..64 of [A-Za-z0-9._-]", *name)}
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	switch *typ {
	case "ed25519":
		k, err := keyfile.GenerateEd25519()
		if err != nil {
			return err
		}
		priv, err := k.EncodePrivate()
		if err != nil {
			return err
		}
		pub, err := k.EncodePublic()
		if err != nil {
			return err
		}
		privPath, pubPath := filepath.Join(*out, *name+".key"), filepath.Join(*out, *name+".pub")
		if err := keyfile.WriteNew(privPath, priv, 0o600); err != nil {
			return err
		}
		if err := keyfile.WriteNew(pubPath, pub, 0o644); err != nil {
			return err
		}
		s, _ := k.Signer(protocol.KindTicket)
		fmt.Fprintf(e.stdout, "type: ed25519\nkid: %x\npublic key: %s\nprivate key file: %s (0600)\npublic key file: %s\n",
			s.KeyID(), hex.EncodeToString(k.Private.Public().(ed25519.PublicKey)), privPath, pubPath)
	case "hmac":
		k, err := keyfile.GenerateMaster()
		if err != nil {
			return err
		}
		secret, err := k.EncodePrivate()
		if err != nil {
			return err
		}
		path := filepath.Join(*out, *name+".secret")
		if err := keyfile.WriteNew(path, secret, 0o600); err != nil {
			return err
		}
		ts, _ := k.Signer(protocol.KindTicket)
		rs, _ := k.Signer(protocol.KindReceipt)
		fmt.Fprintf(e.stdout, "type: hmac (master secret; ticket and receipt keys are derived with HKDF)\nticket kid: %x\nreceipt kid: %x\nsecret file: %s (0600)\n",
			ts.KeyID(), rs.KeyID(), path)
	case "":
		return usageError{"--type is required"}
	default:
		return usageError{fmt.Sprintf("--type %q: want ed25519 or hmac", *typ)}
	}
	return nil
}
