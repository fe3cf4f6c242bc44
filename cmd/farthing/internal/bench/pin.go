package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Pinning keeps the gateway and its load apart: the bench's own process —
// the gateway, the bare broker of L2, the verifications of L1 — runs on
// the first half of the cores, and every process that makes load (the
// simulated devices, L2's MQTT clients) on the other half, through
// taskset. Mosquitto, when it is the broker under test, runs on the
// gateway's half too.
type pinning struct {
	gateway, load []int
}

// pin is the bench's pinning; nil when it runs unpinned.
var pin *pinning

// startPinning pins this process (every thread it has; threads made later
// inherit their creator's set) to the first half of the cores and sets
// GOMAXPROCS to match.
func startPinning() (*pinning, error) {
	n := runtime.NumCPU()
	if n < 2 {
		return nil, fmt.Errorf("bench: pinning needs at least 2 cores, this machine has %d", n)
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil, fmt.Errorf("bench: pinning needs taskset (util-linux): %w", err)
	}
	p := &pinning{}
	for c := 0; c < n; c++ {
		if c < n/2 {
			p.gateway = append(p.gateway, c)
		} else {
			p.load = append(p.load, c)
		}
	}
	var set unix.CPUSet
	for _, c := range p.gateway {
		set.Set(c)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return nil, fmt.Errorf("bench: sched_setaffinity: %w", err)
		}
	}
	runtime.GOMAXPROCS(len(p.gateway))
	return p, nil
}

func cpuList(cs []int) string {
	var s []string
	for _, c := range cs {
		s = append(s, strconv.Itoa(c))
	}
	return strings.Join(s, ",")
}

// command is exec.CommandContext for a load process: under taskset on
// the load's cores when pinning.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if pin == nil {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "taskset", append([]string{"-c", cpuList(pin.load), name}, args...)...)
}

// L2ClientsFlag is the flag of the command that runs L2's MQTT clients in a
// process of their own: `farthing bench --l2-clients ADDR --duration D`
// prints the rate.
const L2ClientsFlag = "l2-clients"

// brokerLimit is L2: in this process, or, when pinning, with the clients
// in their own process on the load's cores.
func brokerLimit(ctx context.Context, addr string, d time.Duration) (float64, error) {
	if pin == nil {
		return BrokerLimit(ctx, addr, d)
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := command(ctx, self, "bench", "--"+L2ClientsFlag, addr, "--duration", d.String())
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("L2 clients: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, err := strconv.ParseFloat(strings.TrimSpace(sc.Text()), 64); err == nil {
			return v, nil
		}
	}
	return 0, fmt.Errorf("L2 clients printed no rate: %q", out)
}

// verifyWorkers is how many goroutines L1 runs: the gateway's cores.
func verifyWorkers() int {
	if pin == nil {
		return runtime.NumCPU()
	}
	return len(pin.gateway)
}

// onGatewayCores prefixes a broker's command line to run it on the
// gateway's cores when pinning.
func onGatewayCores(argv []string) []string {
	if pin == nil {
		return argv
	}
	return append([]string{"taskset", "-c", cpuList(pin.gateway)}, argv...)
}
