package web_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/metrics"
	"github.com/narrowband/narrowband/web"
)

// TestContributeOffer: without SetContribute the page gets no offer and
// no token, and its content policy allows neither WebAssembly nor a
// socket to another port; with it the page gets the token, the offered
// stage with its current rate, and exactly the policy the tab needs.
func TestContributeOffer(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "narrowband.wasm"), []byte("\x00asm"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := web.New(web.Options{WasmDir: dir})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	get := func(path string) *http.Response {
		t.Helper()
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	resp := get("/api/contribute")
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("without contribute: %s, want 204 No Content", resp.Status)
	}
	if csp := get("/").Header.Get("Content-Security-Policy"); strings.Contains(csp, "wasm") || strings.Contains(csp, "ws:") {
		t.Errorf("without contribute the policy allows wasm or sockets: %q", csp)
	}

	srv.SetContribute(&web.Contribute{Signal: "ws://127.0.0.1:8700/run-1", Token: "tok", Stage: 1, Stages: 2, TokensPerStep: 1000, MemoryBytes: 5 << 20})
	srv.PublishStep(metrics.StepRecord{Step: 1, Stages: []metrics.StageStats{{Stage: 0, BusySeconds: 0.1}, {Stage: 1, BusySeconds: 0.5}}})
	resp = get("/api/contribute")
	var c web.Contribute
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("with contribute: %s, %v", resp.Status, err)
	}
	if c.Token != "tok" || c.Signal != "ws://127.0.0.1:8700/run-1" || c.Stage != 1 {
		t.Errorf("offer %+v", c)
	}
	if c.StageTokensPerSecond != 2000 {
		t.Errorf("stage 1's current rate %v tokens/s, want 1000 tokens / 0.5 s = 2000", c.StageTokensPerSecond)
	}
	csp := get("/").Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self' 'wasm-unsafe-eval'", "worker-src 'self'", "connect-src 'self' ws://127.0.0.1:8700"} {
		if !strings.Contains(csp, want) {
			t.Errorf("policy %q lacks %q", csp, want)
		}
	}
	if r := get("/static/wasm/narrowband.wasm"); r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "application/wasm" {
		t.Errorf("the wasm peer: %s, %s (instantiateStreaming needs application/wasm)", r.Status, r.Header.Get("Content-Type"))
	}
	if r := get("/static/wasm/wasm_exec.js"); r.StatusCode != http.StatusNotFound {
		t.Errorf("a file not built: %s, want 404", r.Status)
	}
}

// TestContributeOfferOnAllInterfaces: a signaling server bound to every
// interface has no address of its own to offer; the tab is sent to the
// name it reached the page by, in the offer and in the content policy.
func TestContributeOfferOnAllInterfaces(t *testing.T) {
	srv := web.New(web.Options{})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	srv.SetContribute(&web.Contribute{Signal: "ws://0.0.0.0:8700/run-1", Token: "tok", Stage: -1})
	resp, err := http.Get(hs.URL + "/api/contribute")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c web.Contribute
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Signal != "ws://127.0.0.1:8700/run-1" {
		t.Errorf("offered %q, want the page's host with the signaling port", c.Signal)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self' ws://127.0.0.1:8700") {
		t.Errorf("policy %q does not allow the socket the tab will open", csp)
	}
}
