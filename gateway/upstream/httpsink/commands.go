package httpsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/farthing-iot/farthing/gateway/upstream"
	"github.com/farthing-iot/farthing/protocol"
)

// CommandsConfig configures a gateway's HTTP long poll for commands.
type CommandsConfig struct {
	URL     string // the receiver's commands endpoint, …/farthing/commands
	Header  http.Header
	Gateway string
	Targets []protocol.CommandTarget
	// Wait is how long one poll may wait for a command; default 25s.
	Wait time.Duration
	// After returns each target's last seq answered for good (the
	// gateway's books): the poll's cursor.
	After func() (map[string]uint64, error)
}

// maxPollBody bounds one poll's answer: up to 16 commands.
const maxPollBody = 16 * protocol.MaxCommandSize

// Commands polls the receiver for the commands after the gateway's cursor
// and hands each to handle in order, until ctx ends. The cursor is the
// books' own progress, so a command handle did not answer for good is
// asked for again at the next poll.
func Commands(ctx context.Context, cfg CommandsConfig, handle upstream.CommandHandler, log func(string, error)) error {
	if cfg.Wait <= 0 {
		cfg.Wait = 25 * time.Second
	}
	client := &http.Client{Timeout: cfg.Wait + 15*time.Second}
	backoff := time.Second
	for ctx.Err() == nil {
		cmds, err := poll(ctx, client, cfg)
		if err != nil {
			if ctx.Err() == nil {
				log("http commands: polling failed; trying again", err)
				sleep(ctx, backoff)
				backoff = min(2*backoff, 30*time.Second)
			}
			continue
		}
		backoff = time.Second
		before, _ := cfg.After()
		wait := false
		for _, c := range cmds {
			if err := handle(ctx, c); err != nil {
				if !errors.Is(err, upstream.ErrNotYet) {
					log("http commands: answering a command failed; it is asked for again", err)
				}
				wait = true
				break
			}
		}
		if now, _ := cfg.After(); len(cmds) > 0 && maps.Equal(before, now) {
			wait = true // nothing moved on (a command out of order): do not ask again at once
		}
		if wait {
			sleep(ctx, 5*time.Second)
		}
	}
	return nil
}

// poll asks for the commands after the cursor.
func poll(ctx context.Context, client *http.Client, cfg CommandsConfig) ([][]byte, error) {
	after, err := cfg.After()
	if err != nil {
		return nil, err
	}
	q := url.Values{"gateway": {cfg.Gateway}, "wait": {strconv.Itoa(int(cfg.Wait / time.Second))}}
	for _, t := range cfg.Targets {
		if t.Group {
			q.Add("group", t.Name)
		}
		q.Add("after", t.Key()+":"+strconv.FormatUint(after[t.Key()], 10))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range cfg.Header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPollBody+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("httpsink: %s answered %s", cfg.URL, resp.Status)
	}
	if len(body) > maxPollBody {
		return nil, fmt.Errorf("httpsink: %s answered more than %d bytes", cfg.URL, maxPollBody)
	}
	var cmds [][]byte
	if err := cbor.Unmarshal(body, &cmds); err != nil {
		return nil, fmt.Errorf("httpsink: the poll's answer is not a CBOR array of commands: %w", err)
	}
	return cmds, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
