package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/store"
)

// runProof prints the inclusion proof of one ticket in its aggregate(s).
func runProof(e *env, args []string) error {
	fs := newFlags("proof")
	data := fs.String("data", defaultData, "the gateway's data directory")
	ticket := fs.String("ticket", "", "DEVICE/SEQ")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	dev, seqStr, ok := strings.Cut(*ticket, "/")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if !ok || dev == "" || err != nil {
		return usageError{"--ticket DEVICE/SEQ is required"}
	}
	var proofs []gateway.Proof
	if addr, err := os.ReadFile(filepath.Join(*data, gateway.AddrFile)); err == nil {
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + strings.TrimSpace(string(addr)) + "/proof?ticket=" + url.QueryEscape(*ticket))
		if err == nil {
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s", strings.TrimSpace(string(body)))
			}
			if err := json.Unmarshal(body, &proofs); err != nil {
				return err
			}
		}
	}
	if proofs == nil {
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
