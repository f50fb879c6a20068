package data

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDefaultCorpusSplitIsStable(t *testing.T) {
	a, err := Load(context.Background(), Options{ValFraction: 0.01, MinTokens: 129})
	if err != nil {
		t.Fatal(err)
	}
	if a.TrainDocs < 1000 || a.ValDocs < 10 {
		t.Fatalf("Go source corpus: %d train files, %d held-out files; want thousands and dozens", a.TrainDocs, a.ValDocs)
	}
	frac := float64(a.Val.Len()) / float64(a.Train.Len()+a.Val.Len())
	if frac < 0.003 || frac > 0.03 {
		t.Errorf("held-out share %.4f, want about 1%%", frac)
	}
	b, err := Load(context.Background(), Options{ValFraction: 0.01, MinTokens: 129})
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Val.Raw()) != string(b.Val.Raw()) || a.Train.Len() != b.Train.Len() {
		t.Error("two loads of the same corpus split differently")
	}
}

func TestMissingAndEmptyCorpus(t *testing.T) {
	_, err := Load(context.Background(), Options{Paths: []string{filepath.Join(t.TempDir(), "nope")}, ValFraction: 0.01, MinTokens: 129})
	if err == nil {
		t.Fatal("missing path: no error")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(context.Background(), Options{Paths: []string{dir}, ValFraction: 0.01, MinTokens: 129})
	if !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty folder: got %v, want ErrEmpty", err)
	}
	small := filepath.Join(dir, "small.txt")
	os.WriteFile(small, []byte("hello"), 0o644)
	if _, err := Load(context.Background(), Options{Paths: []string{small}, ValFraction: 0.01, MinTokens: 129}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("tiny file: got %v, want ErrEmpty", err)
	}
}

func TestBatchIsPureFunctionOfStep(t *testing.T) {
	text := make([]byte, 10000)
	for i := range text {
		text[i] = byte(i * 7)
	}
	const B, T = 4, 16
	x1, y1 := make([]int32, B*T), make([]int32, B*T)
	x2, y2 := make([]int32, B*T), make([]int32, B*T)
	Batch(Bytes(text), 1, 5, 0, B, T, x1, y1)
	Batch(Bytes(text), 2, 9, 1, B, T, x2, y2) // something else in between
	Batch(Bytes(text), 1, 5, 0, B, T, x2, y2)
	for i := range x1 {
		if x1[i] != x2[i] || y1[i] != y2[i] {
			t.Fatal("same (seed, step, micro) gave different batches")
		}
	}
	for i := 0; i < B*T; i++ {
		if i%T != T-1 && y1[i] != x1[i+1] {
			t.Fatal("targets are not the next byte")
		}
	}
}

func TestChunksScoreEveryByteOnce(t *testing.T) {
	var text []int32
	for c := 'a'; c <= 'z'; c++ {
		text = append(text, c)
	}
	n := 0
	for _, c := range Chunks(text, 4) {
		if len(c) > 5 || len(c) < 2 {
			t.Fatalf("chunk of %d bytes", len(c))
		}
		n += len(c) - 1
	}
	// 26 bytes in windows of 5: 5 windows of 5 and one of 1 (dropped) → 20 predictions.
	if n != 20 {
		t.Fatalf("%d predicted bytes, want 20", n)
	}
}
