package rtc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/narrowband/narrowband/signaling"
)

// The test binary re-executes itself as the far peer: with helperEnv set,
// TestMain runs runHelper instead of the tests.
const (
	helperEnv    = "NARROWBAND_RTC_HELPER" // "echo" or "sink"
	helperURLEnv = "NARROWBAND_RTC_HELPER_URL"
	// helperProfEnv names a file for the helper's CPU profile, so the
	// receiving side of BenchmarkTwoProcesses can be profiled too.
	helperProfEnv = "NARROWBAND_RTC_HELPER_CPUPROFILE"
	// noOffloadEnv set makes loopbackConfig switch GSO/GRO batching off.
	noOffloadEnv = "NARROWBAND_RTC_NOOFFLOAD"
)

func TestMain(m *testing.M) {
	// Both ends of the benchmarks run as peer processes do (GOGC=100 in
	// the environment measures Go's default instead).
	TuneGC()
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode, os.Getenv(helperURLEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper joins the room as "child" and serves "parent": echo sends every
// message back; sink counts them and answers an empty message with its CPU
// time so far (8 bytes, ns), so the parent can charge both processes.
func runHelper(mode, url string) error {
	switch mode {
	case "nat-server":
		return runNATServer()
	case "nat-peer":
		return runNATPeer()
	}
	if path := os.Getenv(helperProfEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sig, err := signaling.DialOptions(ctx, url, "child", testSecret, signaling.ClientOptions{Logger: quiet()})
	if err != nil {
		return err
	}
	defer sig.Close()
	cfg := loopbackConfig()
	if mode == "hang" {
		cfg.FailTimeout = 2 * time.Second
	}
	c, err := Connect(ctx, sig, "parent", cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if mode == "hang" {
		fmt.Println("CONNECTED")
		select {} // wait to be killed
	}
	for {
		msg, err := c.Recv(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case mode == "echo":
			err = c.Send(ctx, msg)
		case len(msg) == 0:
			err = c.Send(ctx, binary.BigEndian.AppendUint64(nil, uint64(cpuTime())))
		}
		if err != nil {
			return err
		}
	}
}

// startChild runs the helper process and connects to it as "parent".
func startChild(t testing.TB, mode string) (*Conn, *exec.Cmd) {
	t.Helper()
	cfg := loopbackConfig()
	if mode == "hang" {
		cfg.FailTimeout = 2 * time.Second
	}
	return startChildConfig(t, mode, cfg)
}

func startChildConfig(t testing.TB, mode string, cfg Config) (*Conn, *exec.Cmd) {
	t.Helper()
	url := startSignal(t)
	sig := join(t, url, "parent")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperURLEnv+"="+url)
	if cfg.NoOffload {
		cmd.Env = append(cmd.Env, noOffloadEnv+"=1") // the helper's loopbackConfig reads it
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, sig, "child", cfg)
	if err != nil {
		t.Fatalf("connect to the helper process: %v (helper stderr: %s)", err, stderr.String())
	}
	t.Cleanup(func() { c.Close() })
	return c, cmd
}

func TestTwoProcesses(t *testing.T) {
	c, cmd := startChild(t, "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sizes := []int{0, 1, 1000, MaxChunk, 3<<20 + 5}
	go func() {
		for i, n := range sizes {
			if err := c.Send(ctx, bytes.Repeat([]byte{byte(i + 1)}, n)); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	for i, n := range sizes {
		got, err := c.Recv(ctx)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if !bytes.Equal(got, bytes.Repeat([]byte{byte(i + 1)}, n)) {
			t.Fatalf("echo %d: got %d bytes, want %d bytes of %d", i, len(got), n, i+1)
		}
	}
	if s := c.Stats(); s.Candidate != "host" || s.MessagesReceived != uint64(len(sizes)) {
		t.Errorf("Stats after the echo: %+v", s)
	}
	c.Close() // the helper sees io.EOF and exits 0
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("helper process: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("helper process did not exit after the link closed")
	}
}

// TestPeerProcessKilled: when the far process dies without closing (kill
// -9), Recv on this end fails with a lost-link error within FailTimeout.
func TestPeerProcessKilled(t *testing.T) {
	c, cmd := startChild(t, "hang")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Send(ctx, []byte("are you there")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.Recv(ctx)
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv after the peer process was killed: got %v, want a lost-link error", err)
	}
	t.Logf("Recv failed %v after the kill: %v", time.Since(start).Round(time.Millisecond), err)
	if err := c.Send(ctx, []byte("hello?")); err == nil {
		// SCTP may still accept into its buffer; a second Send must fail.
		if err := c.Send(ctx, []byte("hello?")); err == nil {
			t.Errorf("Send keeps succeeding on a dead link")
		}
	}
}

// childCPU asks the sink helper for its CPU time.
func childCPU(b *testing.B, c *Conn) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Send(ctx, nil); err != nil {
		b.Fatal(err)
	}
	msg, err := c.Recv(ctx)
	if err != nil || len(msg) != 8 {
		b.Fatalf("child CPU report: %d bytes, %v", len(msg), err)
	}
	return time.Duration(binary.BigEndian.Uint64(msg))
}

// BenchmarkTwoProcesses measures one-way throughput from this process to a
// helper process over a loopback data channel, and the CPU both spend.
func BenchmarkTwoProcesses(b *testing.B) {
	for _, bc := range []struct {
		size    int
		offload bool
	}{{64 << 10, true}, {64 << 10, false}} {
		size := bc.size
		b.Run(fmt.Sprintf("size=%d/offload=%v", size, bc.offload), func(b *testing.B) {
			cfg := loopbackConfig()
			cfg.NoOffload = !bc.offload
			c, _ := startChildConfig(b, "sink", cfg)
			msg := make([]byte, size)
			ctx := context.Background()
			child0, self0 := childCPU(b, c), cpuTime()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := c.Send(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
			child1 := childCPU(b, c) // arrives after every message was taken
			elapsed := time.Since(start)
			b.StopTimer()
			self1 := cpuTime()
			mb := float64(size*b.N) / 1e6
			b.ReportMetric(mb/elapsed.Seconds(), "MB/s")
			b.ReportMetric((self1-self0).Seconds()*1e3/mb, "send-cpu-ms/MB")
			b.ReportMetric((child1-child0).Seconds()*1e3/mb, "recv-cpu-ms/MB")
		})
	}
}

// BenchmarkConnect measures set-up time: two peers dial the signaling
// server, exchange offer/answer/candidates and open the data channel.
func BenchmarkConnect(b *testing.B) {
	url := startSignal(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		// Fresh IDs: the server may not have seen the last round's leave yet.
		ida, idb := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		sa, err := signaling.DialOptions(ctx, url, ida, "", signaling.ClientOptions{Key: testKey, Logger: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		sb, err := signaling.DialOptions(ctx, url, idb, "", signaling.ClientOptions{Key: testKey, Logger: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		errc := make(chan error, 1)
		var cb *Conn
		go func() {
			var err error
			cb, err = Connect(ctx, sb, ida, loopbackConfig())
			errc <- err
		}()
		ca, err := Connect(ctx, sa, idb, loopbackConfig())
		if err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		ca.Close()
		cb.Close()
		sa.Close()
		sb.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/connect")
}
