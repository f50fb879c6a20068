package tokenizer

import (
	"context"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestGoSourceTokensPerByte trains on the Go standard library's source
// (non-test .go files outside testdata, 71 MB) without a 1% held-out
// split by file (the split of stages' TestTrainGoSource), at vocabularies
// 4096 and 8192, and reports the training time and tokens per byte on the
// held-out files. It takes minutes: NARROWBAND_LONG=1 runs it.
func TestGoSourceTokensPerByte(t *testing.T) {
	if os.Getenv("NARROWBAND_LONG") != "1" {
		t.Skip("long: set NARROWBAND_LONG=1")
	}
	files, err := ListFiles([]string{filepath.Join(runtime.GOROOT(), "src")}, ".go")
	if err != nil {
		t.Fatal(err)
	}
	var train, held []string
	for _, p := range files {
		if strings.HasSuffix(p, "_test.go") || strings.Contains(p, "testdata") {
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(p))
		if h.Sum32()%100 == 0 {
			held = append(held, p)
		} else {
			train = append(train, p)
		}
	}
	docs, err := ReadFiles(train)
	if err != nil {
		t.Fatal(err)
	}
	heldDocs, err := ReadFiles(held)
	if err != nil {
		t.Fatal(err)
	}
	var heldBytes int
	for _, d := range heldDocs {
		heldBytes += len(d)
	}
	for _, vocab := range []int{4096, 8192} {
		start := time.Now()
		tok, st, err := Train(context.Background(), docs, DefaultTrainConfig(vocab))
		if err != nil {
			t.Fatal(err)
		}
		total := time.Since(start)
		var tokens int
		for _, d := range heldDocs {
			tokens += len(tok.Encode(d))
		}
		t.Logf("vocab %d: trained on %d files, %.1f MB (%d pre-tokens, %d distinct) in %.1fs (counting %.1fs on %d goroutines, %d merges %.1fs); held-out %d files, %.2f MB: %.4f tokens/byte (%.2f bytes/token)",
			vocab, len(train), float64(st.Bytes)/1e6, st.Pieces, st.Words, total.Seconds(), st.CountTime.Seconds(), runtime.GOMAXPROCS(0),
			st.Merges, st.MergeTime.Seconds(), len(held), float64(heldBytes)/1e6, float64(tokens)/float64(heldBytes), float64(heldBytes)/float64(tokens))
		if perByte := float64(tokens) / float64(heldBytes); perByte > 0.5 {
			t.Errorf("vocab %d: %.3f tokens per byte on held-out Go source: no better than pairs of bytes", vocab, perByte)
		}
	}
}
