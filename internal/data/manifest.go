package data

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/narrowband/narrowband/internal/metrics"
)

// ManifestName is the name of the manifest in a run folder.
const ManifestName = "manifest.json"

// Manifest is what a corpus was made of: every file read (size, sha256,
// documents and how many were held out), what was skipped and why, and
// the split's totals. A run writes it beside its checkpoints, so what a
// model saw can be checked, and its Hash keys the token cache.
type Manifest struct {
	Version     int      `json:"version"`
	Sources     []string `json:"sources"`
	ValFraction float64  `json:"val_fraction"`
	Split       string   `json:"split"`
	// Hash is the sha256 of what determines the token streams: every
	// file's name below its folder, format, size and sha256, the split
	// rule and val_fraction; not where the folder is, so a moved corpus
	// keeps its cache.
	Hash           string         `json:"sha256"`
	Files          []ManifestFile `json:"files"`
	Skipped        []Skipped      `json:"skipped,omitempty"`
	Documents      int            `json:"documents"`
	TrainDocuments int            `json:"train_documents"`
	ValDocuments   int            `json:"val_documents"`
	TrainBytes     int64          `json:"train_bytes"`
	ValBytes       int64          `json:"val_bytes"`
	// Tokenizer is "bytes" or the sha256 of the tokenizer.json; the token
	// counts are after the tail hold-out (HeldOutTail ids, if any).
	Tokenizer   string `json:"tokenizer"`
	TrainTokens int64  `json:"train_tokens"`
	ValTokens   int64  `json:"val_tokens"`
	HeldOutTail int64  `json:"held_out_tail_tokens,omitempty"`
}

// ManifestFile is one file read.
type ManifestFile struct {
	Path         string `json:"path"`
	Name         string `json:"name"` // below its folder: what the split hashes
	Format       string `json:"format"`
	Size         int64  `json:"size"`
	SHA256       string `json:"sha256"`
	Documents    int    `json:"documents"`
	ValDocuments int    `json:"val_documents"`
}

// Skipped is a file or folder left out, and why.
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// hash computes Hash.
func (m *Manifest) hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "narrowband corpus v%d\x00%s\x00%v\x00", m.Version, m.Split, m.ValFraction)
	for _, f := range m.Files {
		fmt.Fprintf(h, "%s\x00%s\x00%d\x00%s\x00", f.Name, f.Format, f.Size, f.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Write writes the manifest as indented JSON, atomically.
func (m *Manifest) Write(path string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return metrics.WriteFileAtomic(path, append(b, '\n'))
}

// skippedNote says, for an error about an empty corpus, what was skipped.
func (m *Manifest) skippedNote() string {
	if len(m.Skipped) == 0 {
		return ""
	}
	var names []string
	for i, s := range m.Skipped {
		if i == 3 {
			names = append(names, "…")
			break
		}
		names = append(names, s.Path+" ("+s.Reason+")")
	}
	return fmt.Sprintf("; %d skipped: %s", len(m.Skipped), strings.Join(names, ", "))
}
