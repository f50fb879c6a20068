package transporttest

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leakSettle is how long checkNoLeaks waits for goroutines to exit: network
// transports tear down asynchronously (timers, read loops noticing closed
// sockets).
const leakSettle = 10 * time.Second

// ignoredStacks are goroutines that belong to the Go runtime or the testing
// package, not to the transport under test.
var ignoredStacks = []string{
	"testing.tRunner",           // other tests, including parallel siblings
	"testing.(*T).Run",          // the test harness itself
	"testing.runTests",          // ditto
	"os/signal.signal_recv",     // started lazily by signal.Notify
	"runtime.ensureSigM",        // ditto
	"runtime/trace.Start",       // go test -trace
	"runtime.goexit0",           // exiting right now
	"testing.(*F).Fuzz",         // fuzzing workers
	"testing/internal/testdeps", // go test -fuzz coordinator
}

// GoroutineStacks returns the stack of every live goroutine keyed by id
// (for leak checks of a transport's own goroutines).
func GoroutineStacks() map[int64]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := make(map[int64]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		// "goroutine 123 [chan receive]:\n..."
		rest, ok := strings.CutPrefix(g, "goroutine ")
		if !ok {
			continue
		}
		idText, _, ok := strings.Cut(rest, " ")
		if !ok {
			continue
		}
		id, err := strconv.ParseInt(idText, 10, 64)
		if err != nil {
			continue
		}
		stacks[id] = g
	}
	return stacks
}

// goroutineSnapshot records which goroutines exist now.
func goroutineSnapshot() map[int64]bool {
	ids := make(map[int64]bool)
	for id := range GoroutineStacks() {
		ids[id] = true
	}
	return ids
}

// leaked returns the stacks of goroutines started since before that are
// still alive and not ignorable.
func leaked(before map[int64]bool) []string {
	var out []string
	for id, stack := range GoroutineStacks() {
		if before[id] || ignorable(stack) {
			continue
		}
		out = append(out, stack)
	}
	return out
}

func ignorable(stack string) bool {
	for _, s := range ignoredStacks {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// checkNoLeaks fails t if goroutines started since before are still alive
// after a settle period, printing their stacks.
func checkNoLeaks(t *testing.T, before map[int64]bool) {
	t.Helper()
	deadline := time.Now().Add(leakSettle)
	for {
		left := leaked(before)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutine(s) started during the test still run %v after both ends closed (a Conn must stop everything it started on Close):\n\n%s",
				len(left), leakSettle, strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
