package provider

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/farthing-iot/farthing/protocol"
)

// FleetAccess says who may use the fleet API: Push (push commands, read
// the fleet's status) and Poll (gateways polling for commands) are the
// SHA-256 of their bearer tokens; an all-zero one refuses every request.
type FleetAccess struct {
	Push, Poll [sha256.Size]byte
}

func bearer(req *http.Request, want [sha256.Size]byte) bool {
	got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(got))
	return ok && want != [sha256.Size]byte{} && subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

// maxPollWait bounds a poll's wait.
const maxPollWait = 60 * time.Second

// FleetHandler serves the control channel:
//
//	POST /fleet/commands      a command as JSON (protocol.Command's fields; the
//	                          receiver numbers, dates and signs it): 200 with the
//	                          command as pushed; needs the push token
//	GET  /fleet/status        FleetStatus as JSON; needs the push token
//	GET  /farthing/commands   a gateway's poll (protocol.CommandsPath): the
//	                          commands after each ?after=KEY:SEQ, a CBOR array of
//	                          the signed commands; waits up to ?wait= seconds
//	                          for one; needs the poll token
func (r *Receiver) FleetHandler(log *slog.Logger, access FleetAccess) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := http.NewServeMux()
	refuse := func(w http.ResponseWriter, req *http.Request, what string) {
		log.Warn("fleet API: refused for want of the token", "what", what, "remote", req.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="farthing-fleet"`)
		http.Error(w, what+" needs its bearer token", http.StatusUnauthorized)
	}
	m.HandleFunc("POST /fleet/commands", func(w http.ResponseWriter, req *http.Request) {
		if !bearer(req, access.Push) {
			refuse(w, req, "pushing a command")
			return
		}
		var c protocol.Command
		dec := json.NewDecoder(io.LimitReader(req.Body, protocol.MaxCommandSize*2))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			http.Error(w, "a command as JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		pushed, _, err := r.Push(req.Context(), c)
		status := http.StatusOK
		switch {
		case errors.Is(err, ErrCommandID):
			status = http.StatusConflict
		case err != nil && pushed.Seq == 0:
			status = http.StatusBadRequest
		case err != nil: // in the books; publishing failed: it goes out again
			log.Warn("fleet: a command pushed could not be published yet", "command", pushed.ID, "error", err)
			err = nil
		}
		if err != nil {
			http.Error(w, err.Error(), status)
			return
		}
		log.Info("fleet: command pushed", "command", pushed.ID, "action", pushed.Action, "target", pushed.Target, "group", pushed.Group, "seq", pushed.Seq)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(pushed)
	})
	m.HandleFunc("GET /fleet/status", func(w http.ResponseWriter, req *http.Request) {
		if !bearer(req, access.Push) {
			refuse(w, req, "the fleet's status")
			return
		}
		st, err := r.FleetStatus(req.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	m.HandleFunc("GET "+protocol.CommandsPath, func(w http.ResponseWriter, req *http.Request) {
		if !bearer(req, access.Poll) {
			refuse(w, req, "polling for commands")
			return
		}
		r.servePoll(w, req)
	})
	return m
}

// servePoll answers a gateway's poll.
func (r *Receiver) servePoll(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	after := map[string]uint64{}
	for _, a := range q["after"] {
		i := strings.LastIndexByte(a, ':')
		seq, err := strconv.ParseUint(a[i+1:], 10, 64)
		if i < 0 || err != nil || len(after) >= 64 {
			http.Error(w, "after=KEY:SEQ, at most 64", http.StatusBadRequest)
			return
		}
		after[a[:i]] = seq
	}
	wait, _ := strconv.Atoi(q.Get("wait"))
	cmds, err := r.PollCommands(req.Context(), after, 16, min(time.Duration(max(wait, 0))*time.Second, maxPollWait))
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if cmds == nil {
		cmds = [][]byte{}
	}
	b, err := cbor.Marshal(cmds)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/cbor")
	w.Write(b)
}
