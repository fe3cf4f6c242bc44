package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/mqttdev"
	"github.com/farthing-iot/farthing/internal/atomicfile"
	"github.com/farthing-iot/farthing/protocol"
)

// A fleet is the simulator run as firmware would run: each device is a
// devicefw client whose sequence reservation, register epoch and register
// live in a fleet file, so a second run goes on where the first stopped
// (as a device goes on after its gateway restarts or is restored); its
// register counts on with time whether or not a ticket gets through; it
// connects with backoff and reconnects after an outage; and a ticket
// stays pending, sent again every ResendEvery and after every reconnect,
// until a final receipt. What the gateway charged is then the registers'
// increase from each device's first reading, exactly once (FleetReport).

// FleetConfig describes a fleet run.
type FleetConfig struct {
	Broker   string // tcp://host:port
	Prefix   string // topic prefix; default farthing/v1
	Devices  []Device
	Rate     float64       // tickets per second over all devices
	Duration time.Duration // of reporting; then the pending drain
	// File is the fleet file (JSON, 0600); Fresh starts it over: a new
	// register epoch and seqs above every earlier run's.
	File  string
	Fresh bool
	// Step is the register units a device counts between two tickets;
	// default 10.
	Step uint64
	// Drain is how long to wait for the last receipts; default 30s.
	Drain time.Duration
	// ResendEvery resends a device's pending tickets; default 2s.
	ResendEvery time.Duration
	Progress    io.Writer
}

// FleetReport is what a fleet run did. Used is what the devices' registers
// counted since their first reading, over every run of the fleet file:
// with nothing pending, the gateway charged exactly that.
type FleetReport struct {
	Devices           int               `json:"devices"`
	Sent              uint64            `json:"sent"`
	Resent            uint64            `json:"resent"`
	Accepted          uint64            `json:"accepted"`
	Duplicates        uint64            `json:"duplicates"`
	InsufficientFunds uint64            `json:"insufficient_funds"`
	RetryLater        uint64            `json:"retry_later"`
	Held              uint64            `json:"held"`
	Rejected          map[string]uint64 `json:"rejected"`
	Pending           int               `json:"pending"` // tickets without a final receipt at the end
	Charged           map[string]uint64 `json:"charged_nanos"`
	Used              uint64            `json:"used_units"` // Σ register − first reading, every run
	Elapsed           time.Duration     `json:"elapsed_ns"`
}

// String formats the report for people.
func (r *FleetReport) String() string {
	s := fmt.Sprintf("fleet: devices %d, sent %d (resent %d), accepted %d, duplicates %d, insufficient funds %d, retry later %d, held %d, pending %d\n",
		r.Devices, r.Sent, r.Resent, r.Accepted, r.Duplicates, r.InsufficientFunds, r.RetryLater, r.Held, r.Pending)
	for k, v := range r.Rejected {
		s += fmt.Sprintf("rejected %s: %d\n", k, v)
	}
	return s + fmt.Sprintf("the registers counted %d units since each device's first reading (every run of the fleet file)\n", r.Used)
}

// fleetDevice is one device's record in the fleet file.
type fleetDevice struct {
	Seq      uint64 `json:"seq_reserved"` // devicefw's sequence reservation
	Epoch    uint64 `json:"register_epoch"`
	Register uint64 `json:"register"`          // the last register reported
	Reserved uint64 `json:"register_reserved"` // a register at or past every one reported
	First    uint64 `json:"first_register"`    // the first register reported (its baseline)
	Started  bool   `json:"started"`
}

// fleetFile is the fleet file, saved whole (temp file, fsync, rename)
// whenever a device's reservation moves.
type fleetFile struct {
	mu      sync.Mutex
	path    string
	Version int                     `json:"version"`
	Devices map[string]*fleetDevice `json:"devices"`
}

func loadFleet(path string, fresh bool) (*fleetFile, error) {
	f := &fleetFile{path: path, Version: 1, Devices: map[string]*fleetDevice{}}
	if fresh {
		return f, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, f); err != nil || f.Version != 1 {
		return nil, fmt.Errorf("sim: fleet file %s: not a version 1 fleet file (%v); --fresh starts over", path, err)
	}
	return f, nil
}

// save writes the fleet file durably. The caller holds mu.
func (f *fleetFile) save() error {
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	return atomicfile.Write(f.path, b, 0o600)
}

// seqStore is one device's devicefw.SeqStore in the fleet file.
type seqStore struct {
	f *fleetFile
	d *fleetDevice
}

func (s seqStore) LoadSeq() (uint64, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	return s.d.Seq, nil
}

func (s seqStore) SaveSeq(next uint64) error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.d.Seq = next
	return s.f.save()
}

// fleetRun is one run of a fleet.
type fleetRun struct {
	cfg  FleetConfig
	file *fleetFile
	mu   sync.Mutex // guards rep
	rep  FleetReport
}

// RunFleet runs the fleet until it has reported for Duration and its
// pending tickets are answered (or Drain passed, or ctx ended).
func RunFleet(ctx context.Context, cfg FleetConfig) (*FleetReport, error) {
	if len(cfg.Devices) == 0 || cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.File == "" {
		return nil, errors.New("sim: a fleet needs devices, a rate, a duration and a fleet file")
	}
	if cfg.Step == 0 {
		cfg.Step = 10
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	if cfg.ResendEvery <= 0 {
		cfg.ResendEvery = 2 * time.Second
	}
	file, err := loadFleet(cfg.File, cfg.Fresh)
	if err != nil {
		return nil, err
	}
	r := &fleetRun{cfg: cfg, file: file}
	r.rep.Devices, r.rep.Rejected, r.rep.Charged = len(cfg.Devices), map[string]uint64{}, map[string]uint64{}
	now := time.Now()
	file.mu.Lock()
	for _, d := range cfg.Devices {
		if file.Devices[d.Entry.ID] == nil {
			// Above every seq and epoch an earlier run (of any kind) used.
			file.Devices[d.Entry.ID] = &fleetDevice{Seq: uint64(now.UnixMicro()), Epoch: uint64(now.Unix())}
		}
	}
	err = file.save()
	file.mu.Unlock()
	if err != nil {
		return nil, err
	}
	interval := time.Duration(float64(time.Second) * float64(len(cfg.Devices)) / cfg.Rate)
	var wg sync.WaitGroup
	errs := make([]error, len(cfg.Devices))
	for i, d := range cfg.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.device(ctx, d, interval, firstAt(interval, i, len(cfg.Devices)))
		}()
	}
	wg.Wait()
	r.rep.Elapsed = time.Since(now)
	file.mu.Lock()
	for _, d := range cfg.Devices {
		if fd := file.Devices[d.Entry.ID]; fd.Started {
			r.rep.Used += fd.Register - fd.First
		}
	}
	err = file.save()
	file.mu.Unlock()
	return &r.rep, errors.Join(append(errs, err)...)
}

// device runs one device: connect, report on the clock, resend, drain.
func (r *fleetRun) device(ctx context.Context, d Device, interval, offset time.Duration) error {
	fd := r.file.Devices[d.Entry.ID]
	signer, err := d.Secrets.Signer()
	if err != nil {
		return err
	}
	rv, err := d.Secrets.ReceiptVerifier()
	if err != nil {
		return err
	}
	meters := make([]string, 0, len(d.Entry.Tariffs))
	for m := range d.Entry.Tariffs {
		meters = append(meters, m)
	}
	sort.Strings(meters)
	c, err := devicefw.New(devicefw.Config{Device: d.Entry.ID, Meters: meters[:1], Signer: signer, Receipts: rv,
		Seq: seqStore{r.file, fd}, Epoch: fd.Epoch, Pending: make([]byte, 32*protocol.MaxTicketSize)})
	if err != nil {
		return fmt.Errorf("sim: device %s: %w", d.Entry.ID, err)
	}
	dev, err := r.connect(ctx, d, c)
	if err != nil {
		return err
	}
	defer dev.Close()
	report := time.NewTimer(offset)
	defer report.Stop()
	resend := time.NewTicker(r.cfg.ResendEvery)
	defer resend.Stop()
	end := time.After(r.cfg.Duration)
	var drain <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-end:
			end, drain = nil, time.After(r.cfg.Drain)
			report.Stop()
		case <-drain:
			r.count(func(rep *FleetReport) { rep.Pending += dev.Pending() })
			return nil
		case <-resend.C:
			if n := dev.ResendPending(); n > 0 {
				r.count(func(rep *FleetReport) { rep.Resent += uint64(n) })
			}
		case <-report.C:
			report.Reset(interval)
			if err := r.reportOnce(dev, fd); err != nil {
				return fmt.Errorf("sim: device %s: %w", d.Entry.ID, err)
			}
		}
		if drain != nil && dev.Pending() == 0 {
			return nil
		}
	}
}

// reportOnce moves the register on by a step (saving a new register
// reservation first when it passes the last) and reports it, unless the
// device's pending tickets are full: the register counts on, and the next
// ticket carries what this one would have.
func (r *fleetRun) reportOnce(dev *mqttdev.Device, fd *fleetDevice) error {
	f := r.file
	f.mu.Lock()
	fd.Register += r.cfg.Step
	if !fd.Started {
		fd.First, fd.Started = fd.Register, true
	}
	reg := fd.Register
	var err error
	if fd.Register > fd.Reserved {
		fd.Reserved = fd.Register + 100*r.cfg.Step
		err = f.save()
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = dev.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg}})
	if errors.Is(err, devicefw.ErrPendingFull) {
		return nil
	}
	if err == nil {
		r.count(func(rep *FleetReport) { rep.Sent++ })
	}
	return err
}

// connect connects the device, retrying with backoff (200 ms doubling to
// 5 s) until it is in or ctx ends.
func (r *fleetRun) connect(ctx context.Context, d Device, c *devicefw.Client) (*mqttdev.Device, error) {
	backoff := 200 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		dev, err := mqttdev.Connect(cctx, mqttdev.Config{Broker: r.cfg.Broker, Prefix: r.cfg.Prefix, Device: d.Entry.ID,
			Password: d.Secrets.MQTTPassword(), Client: c, OnReceipt: r.onReceipt})
		cancel()
		if err == nil {
			return dev, nil
		}
		if r.cfg.Progress != nil {
			fmt.Fprintf(r.cfg.Progress, "sim: device %s cannot connect (%v): again in %v\n", d.Entry.ID, err, backoff)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// onReceipt counts a receipt the client took (a repeated receipt of a
// ticket no longer pending counts once, as its first).
func (r *fleetRun) onReceipt(rc protocol.Receipt, err error) {
	if err != nil {
		return // not pending (answered before), or not verifiable: counted nowhere
	}
	r.count(func(rep *FleetReport) {
		switch rc.Status {
		case protocol.StatusAccepted:
			rep.Accepted++
			rep.Charged[rc.Currency] += rc.Charged
		case protocol.StatusDuplicate: // its first receipt was lost: this one says what it was charged
			rep.Duplicates++
			rep.Charged[rc.Currency] += rc.Charged
		case protocol.StatusInsufficientFunds:
			rep.InsufficientFunds++
		case protocol.StatusRetryLater:
			rep.RetryLater++
		case protocol.StatusHeld:
			rep.Held++
		default:
			rep.Rejected[rc.Reason.String()]++
		}
	})
}

func (r *fleetRun) count(f func(*FleetReport)) {
	r.mu.Lock()
	f(&r.rep)
	r.mu.Unlock()
}
