package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/store"
)

// runInspect shows a gateway's state: from the running daemon if there is
// one (it holds the state file), else from the file, read-only.
func runInspect(e *env, args []string) error {
	fs := newFlags("inspect")
	data := fs.String("data", defaultData, "the gateway's data directory")
	op := addOperatorFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	rep := &ledger.Report{}
	err := op.getJSON(*data, "/inspect", rep)
	if err != nil && !errors.Is(err, errNoDaemon) {
		return err
	}
	if err != nil {
		st, oerr := store.Open(filepath.Join(*data, gateway.StateFile), store.Options{ReadOnly: true})
		if oerr != nil {
			if os.IsNotExist(errors.Unwrap(oerr)) || errors.Is(oerr, os.ErrNotExist) {
				return fmt.Errorf("%s: no state file", *data)
			}
			return oerr
		}
		defer st.Close()
		if rep, err = ledger.New(st, ledger.Config{}).Inspect(nil); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
