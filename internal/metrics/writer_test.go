package metrics

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResumeJSONLDropsStepsAfterTheCheckpoint(t *testing.T) {
	p := filepath.Join(t.TempDir(), "metrics.jsonl")
	j, err := CreateJSONL(p)
	if err != nil {
		t.Fatal(err)
	}
	for s := 1; s <= 5; s++ {
		j.Write(StepRecord{Step: s, Loss: float64(s)})
	}
	j.Close()
	r, err := ResumeJSONL(p, 3)
	if err != nil {
		t.Fatal(err)
	}
	r.Write(StepRecord{Step: 4, Loss: 40})
	r.Close()
	recs, err := ReadJSONL(p)
	if err != nil {
		t.Fatal(err)
	}
	var got []float64
	for _, r := range recs {
		got = append(got, r.Loss)
	}
	if len(got) != 4 || got[2] != 3 || got[3] != 40 {
		t.Fatalf("after resuming at step 3: losses %v, want [1 2 3 40]", got)
	}
}

func TestWriteFileAtomicLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "summary.json")
	if err := WriteFileAtomic(p, []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "new" {
		t.Fatalf("content %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("%d files in the folder, want only summary.json", len(ents))
	}
	// A folder that cannot be written: a clear error, the old file intact.
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x.json"), []byte("x")); err == nil || !strings.Contains(err.Error(), "x.json") {
		t.Errorf("write into a missing folder: %v", err)
	}
}

func TestReadJSONLNamesBadLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.jsonl")
	os.WriteFile(p, []byte("{\"step\":1}\n{broken\n"), 0o644)
	_, err := ReadJSONL(p)
	if err == nil || !strings.Contains(err.Error(), "m.jsonl:2") {
		t.Fatalf("got %v, want an error naming line 2", err)
	}
}
