package report

import (
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/config"
	"github.com/narrowband/narrowband/internal/metrics"
)

// TestLossUnitFollowsTheTokenizer: a report of byte runs speaks of nats per
// byte as it always did; one with a tokenized run says nats per token and
// adds the per-byte column that compares tokenizers.
func TestLossUnitFollowsTheTokenizer(t *testing.T) {
	byteRun := Run{Label: "bytes", Config: config.Default(), Summary: metrics.Summary{FinalValLoss: 1.5, FinalValLossPerByte: 1.5}}
	tok := config.Default()
	tok.Data.Tokenizer = "tok.json"
	tokRun := Run{Label: "bpe", Config: tok, Summary: metrics.Summary{FinalValLoss: 3.25, FinalValLossPerByte: 1.125}}
	md := markdown([]Run{byteRun}, nil, nil)
	if !strings.Contains(md, "final val loss (nats/byte)") || strings.Contains(md, "per byte") {
		t.Errorf("byte runs:\n%s", md)
	}
	md = markdown([]Run{byteRun, tokRun}, nil, nil)
	if !strings.Contains(md, "final val loss (nats/token) | per byte") || !strings.Contains(md, "| 3.2500 | 1.1250 |") || !strings.Contains(md, "| 1.5000 | 1.5000 |") {
		t.Errorf("a tokenized run:\n%s", md)
	}
}
