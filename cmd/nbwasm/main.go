//go:build js && wasm

// Command nbwasm is the stage peer of `narrowband peer`, compiled to
// WebAssembly for a browser tab: the run's web view loads it into a Web
// Worker (web/static/nbworker.js) when a visitor clicks Contribute. It
// joins the run's room on the same signaling server with the join token the
// page got from the run (not the secret), takes a stage or waits as a
// spare, and computes with the same model, codecs, wire format and control
// protocol as a native peer. The page owns the RTCPeerConnections (a Worker
// has none) and relays their data channels (signaling/rtc's js build).
//
// Build: GOOS=js GOARCH=wasm go build -o web/static/wasm/narrowband.wasm ./cmd/nbwasm
// (`make wasm`).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"syscall/js"
	"time"

	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/internal/runtime/launch"
	"github.com/narrowband/narrowband/signaling"
	"github.com/narrowband/narrowband/signaling/rtc"
)

// post sends the page a report: {ev: "log"|"joined"|"progress"|"done"|"error", …}.
func post(ev string, fields map[string]any) {
	m := map[string]any{"ev": ev}
	for k, v := range fields {
		m[k] = v
	}
	js.Global().Call("nbReport", js.ValueOf(m))
}

// logWriter turns slog lines into "log" reports, so the tab's console shows
// what a native peer would print.
type logWriter struct{}

func (logWriter) Write(p []byte) (int, error) {
	post("log", map[string]any{"text": strings.TrimSpace(string(p))})
	return len(p), nil
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	js.Global().Set("nbJoin", js.FuncOf(func(this js.Value, args []js.Value) any {
		if len(args) == 0 || args[0].Type() != js.TypeObject {
			post("error", map[string]any{"text": "nbJoin wants {signal, token, ice}"})
			return nil
		}
		o := args[0]
		a := joinArgs{signal: o.Get("signal").String(), token: o.Get("token").String(), id: str(o.Get("id"))}
		if ice := o.Get("ice"); ice.Type() == js.TypeObject {
			for i := 0; i < ice.Length(); i++ {
				a.ice = append(a.ice, ice.Index(i).String())
			}
		}
		go func() {
			err := join(ctx, a)
			if err != nil {
				post("error", map[string]any{"text": err.Error()})
				return
			}
			post("done", nil)
		}()
		return nil
	}))
	js.Global().Set("nbLeave", js.FuncOf(func(this js.Value, args []js.Value) any {
		cancel()
		return nil
	}))
	post("ready", nil)
	select {} // the worker lives until the page ends it
}

func str(v js.Value) string {
	if v.Type() == js.TypeString {
		return v.String()
	}
	return ""
}

type joinArgs struct {
	signal, token, id string
	ice               []string
}

func join(ctx context.Context, a joinArgs) error {
	log := slog.New(slog.NewTextHandler(logWriter{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if a.id == "" {
		var b [4]byte
		rand.Read(b[:])
		a.id = "tab-" + hex.EncodeToString(b[:])
	}
	client, err := signaling.DialBrowser(ctx, a.signal, a.id, "", signaling.ClientOptions{JoinToken: a.token, Logger: log})
	if err != nil {
		return err
	}
	defer client.Close()
	// A tab's key lives as long as the tab: it names this contribution in
	// the run's metrics, and the run admits it without an allow-list.
	key, err := identity.New()
	if err != nil {
		return err
	}
	post("joined", map[string]any{"id": a.id, "key": string(key.Public())})
	rc := rtc.DefaultConfig()
	rc.Logger = log
	for _, s := range a.ice {
		// TURN credentials derive from the run key, which a guest does not
		// have: a tab uses STUN and host candidates only.
		if strings.HasPrefix(s, "stun:") {
			rc.ICEServers = append(rc.ICEServers, rtc.ICEServer{URLs: []string{s}})
		}
	}
	var meter launch.Meter
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				p := meter.Read()
				post("progress", map[string]any{"stage": p.Stage, "steps": p.Steps, "busy": p.BusySeconds,
					"tokens_per_step": p.TokensPerStep, "sent": float64(p.BytesSent), "received": float64(p.BytesReceived)})
			}
		}
	}()
	err = launch.ServePeer(ctx, client, client.Room(), key, rc, &meter, log)
	p := meter.Read()
	post("progress", map[string]any{"stage": p.Stage, "steps": p.Steps, "busy": p.BusySeconds,
		"tokens_per_step": p.TokensPerStep, "sent": float64(p.BytesSent), "received": float64(p.BytesReceived)})
	if err != nil {
		return fmt.Errorf("%s: %w", a.id, err)
	}
	return nil
}
