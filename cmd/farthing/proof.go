package main

import (
	"encoding/json"
	"errors"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/store"
)

// runProof prints the inclusion proof of one ticket in its aggregate(s).
func runProof(e *env, args []string) error {
	fs := newFlags("proof")
	data := fs.String("data", defaultData, "the gateway's data directory")
	ticket := fs.String("ticket", "", "DEVICE/SEQ")
	op := addOperatorFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	dev, seqStr, ok := strings.Cut(*ticket, "/")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if !ok || dev == "" || err != nil {
		return usageError{"--ticket DEVICE/SEQ is required"}
	}
	var proofs []gateway.Proof
	err = op.getJSON(*data, "/proof?ticket="+url.QueryEscape(*ticket), &proofs)
	if err != nil && !errors.Is(err, errNoDaemon) {
		return err
	}
	if err != nil {
		st, err := store.Open(filepath.Join(*data, gateway.StateFile), store.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer st.Close()
		if proofs, err = gateway.TicketProofs(st, dev, seq); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(proofs)
}
