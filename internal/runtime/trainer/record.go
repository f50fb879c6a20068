package trainer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/narrowband/narrowband/internal/data"
	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/internal/ledger"
	"github.com/narrowband/narrowband/internal/runtime/engine"
)

// The run's record of who trained what (package ledger): opened when the
// run starts or resumes, one signed entry per step, its head named in every
// checkpoint and in the summary, together with the hashes of the config,
// the data and the code.

// Metadata keys the record adds to both checkpoint files.
const (
	metaLedgerHead = "narrowband.ledger_head"
	metaConfigHash = "narrowband.config_sha256"
	metaDataHash   = "narrowband.data_sha256"
	metaCode       = "narrowband.code"
)

// provenance is what a run's files name it by.
type provenance struct {
	key        *identity.Key
	configHash string
	dataHash   string
	code       string
}

// openRecord loads the coordinator's key and opens (or continues) the
// run's ledger.
func (r *run) openRecord(resolved []byte) error {
	path := r.cfg.Run.KeyFile
	if path == "" {
		var err error
		if path, err = identity.DefaultPath(); err != nil {
			return err
		}
	}
	key, created, err := identity.LoadOrCreate(path)
	if err != nil {
		return fmt.Errorf("the coordinator's key (run.key_file): %w", err)
	}
	if created {
		r.log.Info("made the coordinator's key", "file", path, "key", key.Public())
	}
	cs := sha256.Sum256(resolved)
	r.prov = provenance{key: key, configHash: hex.EncodeToString(cs[:]), dataHash: corpusHash(r.corpus), code: codeVersion()}
	r.ledger, err = ledger.Open(filepath.Join(r.o.Out, ledger.File), key, ledger.Entry{
		Run: r.cfg.Run.Name, ConfigHash: r.prov.configHash, DataHash: r.prov.dataHash, Code: r.prov.code,
		FromStep: r.start, Time: time.Now().UTC().Format(time.RFC3339),
	})
	if err != nil {
		return fmt.Errorf("the run's ledger: %w", err)
	}
	return nil
}

// recordStep appends the step's work by key: every stage computed all of
// the step's micro-batches (a chain of stages; replicas would split them).
func (r *run) recordStep(step int, res engine.StepResult) error {
	M := r.cfg.Train.MicroBatches
	micro := make([]int, M)
	for i := range micro {
		micro[i] = i
	}
	tokens := int64(r.cfg.Train.BatchSize * r.cfg.Model.BlockSize)
	var work []ledger.Work
	for _, s := range res.Stages {
		w := ledger.Work{Stage: s.Stage, Peer: s.Peer, Key: identity.Public(s.Key), Micro: micro, Tokens: tokens, BytesSent: s.BytesSent,
			ChecksPassed: s.ChecksPassed, ChecksFailed: s.ChecksFailed}
		if w.Key == "" {
			w.Key = r.prov.key.Public() // the run's own goroutines and processes
		}
		if w.Peer == "" {
			w.Peer = "coordinator"
		}
		work = append(work, w)
	}
	if err := r.ledger.Append(ledger.Entry{Kind: ledger.KindStep, Step: step, Work: work, Time: time.Now().UTC().Format(time.RFC3339)}); err != nil {
		return err
	}
	// Peers evicted for failed spot checks (docs/trust.md): their keys,
	// recorded as faulty.
	for _, f := range res.Faulty {
		key := identity.Public(f.Key)
		if key == "" {
			key = r.prov.key.Public() // the run's own goroutines
		}
		reason := fmt.Sprintf("%s, a replica of stage %d, evicted at step %d: %s", f.Peer, f.Stage, f.Step, f.Reason)
		// Its checks in this step, with no work: the attempt it lied in
		// was redone without it.
		work := []ledger.Work{{Stage: f.Stage, Peer: f.Peer, Key: key, ChecksPassed: f.ChecksPassed, ChecksFailed: f.ChecksFailed}}
		if err := r.ledger.Append(ledger.Entry{Kind: ledger.KindFault, Step: step, Key: key, Reason: reason, Work: work, Time: time.Now().UTC().Format(time.RFC3339)}); err != nil {
			return err
		}
	}
	return nil
}

// metadata names the run's record in a checkpoint.
func (r *run) metadata() map[string]string {
	return map[string]string{
		metaLedgerHead: r.ledger.Head(), metaConfigHash: r.prov.configHash,
		metaDataHash: r.prov.dataHash, metaCode: r.prov.code, metaTokenizer: r.tokenizerHash(),
	}
}

// corpusHash identifies the data a run trained on: its source, and its
// training and held-out token streams (for a byte run, its bytes, as
// before tokenizers; a tokenized stream's ids are little-endian at its
// width).
func corpusHash(c *data.Corpus) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00", c.Source, c.Train.Len(), c.Val.Len())
	if w := c.Train.Width(); w > 1 {
		fmt.Fprintf(h, "width %d\x00", w)
	}
	h.Write(c.Train.Raw())
	h.Write(c.Val.Raw())
	return hex.EncodeToString(h.Sum(nil))
}

// codeVersion is the build's VCS revision (with "+dirty" for uncommitted
// changes), or the module version, or "devel".
func codeVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev != "" && dirty:
		return rev + "+dirty"
	case rev != "":
		return rev
	case bi.Main.Version != "" && bi.Main.Version != "(devel)":
		return bi.Main.Version
	}
	return "devel"
}
