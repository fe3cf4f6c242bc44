package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
)

// runBackup is `farthing backup FILE`: a consistent copy of the state
// file taken while the daemon runs (through the operator API), or of a
// stopped gateway's file, written with FILE.sha256 beside it (both 0600:
// the books are private).
func runBackup(e *env, args []string) error {
	fs := newFlags("backup")
	data := fs.String("data", defaultData, "the gateway's data directory")
	op := addOperatorFlags(fs)
	pos, err := parseInterspersed(fs, args, 1)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"backup FILE"}
	}
	out := pos[0]
	tmp := out + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	h := sha256.New()
	n, stream, err := backupFromDaemon(op, *data, io.MultiWriter(f, h))
	if errors.Is(err, errNoDaemon) {
		n, stream, err = backupFromFile(*data, io.MultiWriter(f, h))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	if err := os.WriteFile(out+".sha256", []byte(sum+"  "+filepath.Base(out)+"\n"), 0o600); err != nil {
		return err
	}
	if stream != "" {
		stream = ", stream " + stream
	}
	fmt.Fprintf(e.stdout, "backup %s: %d bytes, sha256 %s%s\n", out, n, sum, stream)
	return nil
}

// backupFromDaemon streams GET /backup into w and checks the trailer's
// checksum against what arrived.
func backupFromDaemon(op *operatorFlags, data string, w io.Writer) (int64, string, error) {
	c, base, err := op.client(data)
	if err != nil {
		return 0, "", err
	}
	c.Timeout = 0 // a large file takes its time
	resp, err := c.Get(base + "/backup")
	if err != nil {
		if *op.url == "" {
			return 0, "", fmt.Errorf("%w: %v", errNoDaemon, err)
		}
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return 0, "", fmt.Errorf("operator API: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), resp.Body)
	if err != nil {
		return n, "", fmt.Errorf("backup interrupted after %d bytes: %w", n, err)
	}
	want := resp.Trailer.Get(operator.BackupChecksumTrailer)
	if got := hex.EncodeToString(h.Sum(nil)); want == "" || got != want {
		return n, "", fmt.Errorf("backup refused: the gateway's checksum %q does not match the %d bytes received (%s)", want, n, got)
	}
	return n, resp.Header.Get("X-Farthing-Stream"), nil
}

// backupFromFile copies a stopped gateway's state file.
func backupFromFile(data string, w io.Writer) (int64, string, error) {
	st, err := store.Open(filepath.Join(data, gateway.StateFile), store.Options{ReadOnly: true})
	if err != nil {
		return 0, "", err
	}
	defer st.Close()
	n, err := st.WriteBackup(w)
	return n, "", err
}

// runRestore is `farthing restore FILE`: it makes a backup the state file
// of a stopped gateway. It refuses a backup whose checksum (FILE.sha256)
// does not match, a running gateway, and a backup of another gateway key;
// the restored file starts a new aggregate stream epoch; a state file in
// the way is kept beside it, never deleted.
func runRestore(e *env, args []string) error {
	fs := newFlags("restore")
	data := fs.String("data", defaultData, "the gateway's data directory")
	keyFile := fs.String("key", "", "the gateway key (default DATA/gateway.key)")
	pos, err := parseInterspersed(fs, args, 1)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"restore FILE"}
	}
	in := pos[0]
	if err := checkSum(in); err != nil {
		return err
	}
	kid, err := gatewayKeyID(*data, *keyFile)
	if err != nil {
		return err
	}
	statePath := filepath.Join(*data, gateway.StateFile)
	if err := refuseRunning(*data, statePath); err != nil {
		return err
	}
	tmp := filepath.Join(*data, ".restore-"+gateway.StateFile)
	if err := copyFile(tmp, in); err != nil {
		return err
	}
	defer os.Remove(tmp)
	st, err := store.Open(tmp, store.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := ledger.Init(ctx, st); err != nil {
		st.Close()
		return err
	}
	r, err := ledger.PrepareRestore(ctx, st, kid[:], time.Now())
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := setAside(e, statePath); err != nil {
		return err
	}
	if err := os.Rename(tmp, statePath); err != nil {
		return err
	}
	if err := syncDir(*data); err != nil {
		return err
	}
	old, _ := protocol.StreamOf(kid[:], r.OldEpoch)
	fmt.Fprintf(e.stdout, "restored %s into %s: new stream epoch %x (the backup's was %x at seq %d); "+
		"devices' next tickets recover what they sent after the backup\n", in, statePath, r.NewEpoch, r.OldEpoch, r.OldLastSeq)
	fmt.Fprintf(e.stdout, "the receivers will be told, first in the new stream: stream %s is superseded after seq %d. "+
		"What it numbered later (sealed by the replaced gateway after the backup) leaves their payable books as superseded_by_restore, "+
		"with its amount; a payout already made over it is carried as money to recover\n", old, r.OldLastSeq)
	return nil
}

// gatewayKeyID is the key id of the gateway key in keyFile (default
// DATA/gateway.key).
func gatewayKeyID(data, keyFile string) ([protocol.KeyIDLen]byte, error) {
	if keyFile == "" {
		keyFile = filepath.Join(data, "gateway.key")
	}
	k, err := keyfile.Load(keyFile)
	if err != nil {
		return [protocol.KeyIDLen]byte{}, fmt.Errorf("gateway key: %w", err)
	}
	if k.Private == nil {
		return [protocol.KeyIDLen]byte{}, fmt.Errorf("%s: not the gateway's Ed25519 private key", keyFile)
	}
	return protocol.KeyIDOf(protocol.AlgEdDSA, k.Private.Public().(ed25519.PublicKey)), nil
}

// refuseRunning refuses a state file a running gateway holds: it holds
// the file's lock.
func refuseRunning(data, statePath string) error {
	if _, err := os.Stat(statePath); err != nil {
		return nil
	}
	st, err := store.Open(statePath, store.Options{ReadOnly: true})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("refused: a gateway is running on %s: stop it first", data)
		}
		return err
	}
	st.Close()
	return nil
}

// setAside keeps the state file a restore replaces, if there is one,
// beside it under a dated name, with its journal if it has one.
func setAside(e *env, statePath string) error {
	if _, err := os.Stat(statePath); err != nil {
		return nil
	}
	aside := statePath + ".before-restore-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(statePath, aside); err != nil {
		return err
	}
	if err := os.Rename(store.JournalPath(statePath), store.JournalPath(aside)); err != nil && !os.IsNotExist(err) {
		return err
	}
	fmt.Fprintf(e.stdout, "the state file it replaces is kept as %s\n", aside)
	return nil
}

// checkSum checks FILE against FILE.sha256.
func checkSum(path string) error {
	b, err := os.ReadFile(path + ".sha256")
	if err != nil {
		return fmt.Errorf("refused: no checksum file %s.sha256 (made by farthing backup): %w", path, err)
	}
	want, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("refused: %s does not match its checksum (%s, want %s)", path, got, want)
	}
	return nil
}

// copyFile copies src to a new file dst (0600), synced.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// runCompact is `farthing compact`: it rewrites a stopped gateway's state
// file without its free pages (bbolt's compaction), keeping the old file
// until the new one is in place.
func runCompact(e *env, args []string) error {
	fs := newFlags("compact")
	data := fs.String("data", defaultData, "the gateway's data directory")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	statePath := filepath.Join(*data, gateway.StateFile)
	before, err := os.Stat(statePath)
	if err != nil {
		return err
	}
	tmp := filepath.Join(*data, ".compact-"+gateway.StateFile)
	os.Remove(tmp)
	if err := store.Compact(tmp, statePath); err != nil {
		os.Remove(tmp)
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("refused: a gateway is running on %s: stop it first", *data)
		}
		return err
	}
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, statePath)
	}
	if err == nil {
		err = syncDir(*data)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	after, _ := os.Stat(statePath)
	fmt.Fprintf(e.stdout, "compacted %s: %d bytes → %d bytes\n", statePath, before.Size(), after.Size())
	return nil
}
