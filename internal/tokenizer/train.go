package tokenizer

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// EndOfText is GPT-2's end-of-text token, the default special token.
const EndOfText = "<|endoftext|>"

// TrainConfig says what Train builds.
type TrainConfig struct {
	// VocabSize is the number of tokens in all: the 256 byte tokens, one
	// per merge, and the special tokens. Training stops early (a smaller
	// vocabulary) when no pair is seen MinFrequency times any more.
	VocabSize int
	// MinFrequency is the fewest occurrences a pair needs to be merged.
	MinFrequency int
	// SpecialTokens get the last ids, in order (EndOfText by default).
	// They never come out of Encode of ordinary text; a caller inserts
	// them between documents.
	SpecialTokens []string
	// Workers is the number of goroutines that pre-tokenize and count the
	// corpus (0: GOMAXPROCS). The result does not depend on it.
	Workers int
}

// DefaultTrainConfig is a vocabulary of size vocab with EndOfText and
// pairs merged from 2 occurrences up.
func DefaultTrainConfig(vocab int) TrainConfig {
	return TrainConfig{VocabSize: vocab, MinFrequency: 2, SpecialTokens: []string{EndOfText}}
}

// maxVocab bounds the vocabulary (token ids are int32, and the models'
// embedding tables must fit).
const maxVocab = 1 << 20

// Validate names the bad field and value.
func (c TrainConfig) Validate() error {
	var errs []error
	if min := 256 + len(c.SpecialTokens); c.VocabSize < min || c.VocabSize > maxVocab {
		errs = append(errs, fmt.Errorf("vocab size %d: must be in %d..%d (256 byte tokens + %d special)", c.VocabSize, min, maxVocab, len(c.SpecialTokens)))
	}
	if c.MinFrequency < 0 {
		errs = append(errs, fmt.Errorf("min frequency %d: must be ≥ 0", c.MinFrequency))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("workers %d: must be ≥ 0 (0: one per CPU)", c.Workers))
	}
	seen := map[string]bool{}
	for _, s := range c.SpecialTokens {
		if s == "" || seen[s] {
			errs = append(errs, fmt.Errorf("special token %q: must be non-empty and given once", s))
		}
		seen[s] = true
	}
	return errors.Join(errs...)
}

// TrainStats describes a training run.
type TrainStats struct {
	Bytes        int64         // corpus size
	Pieces       int64         // pre-tokens in the corpus
	Words        int           // distinct pre-tokens
	Merges       int           // merges learned
	CountTime    time.Duration // pre-tokenizing and counting
	MergeTime    time.Duration // the merge loop
	StoppedEarly bool          // no pair reached MinFrequency before VocabSize
}

// Train learns a byte-level BPE vocabulary from docs (GPT-2's algorithm
// and Hugging Face's trainer's order of merges): the corpus is split into
// GPT-2 pre-tokens and counted, by cfg.Workers goroutines; then, until the
// vocabulary is full, the most frequent adjacent pair of tokens inside a
// pre-token (ties: the pair of smaller ids) becomes a new token. Pair
// counts are updated incrementally, only in the words that hold the pair
// merged, and the most frequent pair comes from a priority queue with lazy
// deletion, so a merge costs what it changes, not the corpus. The result
// depends only on the corpus and cfg.VocabSize, MinFrequency and
// SpecialTokens. Byte b is token b, merge i usually token 256+i, the
// special tokens come last.
func Train(ctx context.Context, docs [][]byte, cfg TrainConfig) (*Tokenizer, TrainStats, error) {
	var st TrainStats
	if err := cfg.Validate(); err != nil {
		return nil, st, fmt.Errorf("train tokenizer: %w", err)
	}
	start := time.Now()
	counts, pieces, err := countPieces(ctx, docs, cfg.Workers)
	if err != nil {
		return nil, st, fmt.Errorf("train tokenizer: %w", err)
	}
	for _, d := range docs {
		st.Bytes += int64(len(d))
	}
	st.Pieces, st.Words, st.CountTime = pieces, len(counts), time.Since(start)

	start = time.Now()
	tr := newTrainer(counts)
	counts = nil
	// The vocabulary grows by one token per merge, except when a merge
	// spells a token that exists already (ab+c after a+bc): then, as in
	// Hugging Face's trainer, the merge gets that token's id. A pair that
	// comes back after it was merged (through such a token) is merged
	// again in the words but not listed twice.
	tokens := make([][]byte, 256, cfg.VocabSize)
	byBytes := make(map[string]int32, cfg.VocabSize)
	for b := range 256 {
		tokens[b] = []byte{byte(b)}
		byBytes[string(tokens[b])] = int32(b)
	}
	var merges [][2]int32
	listed := map[uint64]bool{}
	target := cfg.VocabSize - len(cfg.SpecialTokens)
	minFreq := int64(max(cfg.MinFrequency, 1))
	for n := 0; len(tokens) < target; n++ {
		if n%64 == 0 && ctx.Err() != nil {
			return nil, st, fmt.Errorf("train tokenizer: %w", ctx.Err())
		}
		p, ok := tr.best(minFreq)
		if !ok {
			st.StoppedEarly = true
			break
		}
		a, b := int32(p>>32), int32(uint32(p))
		joined := append(append([]byte(nil), tokens[a]...), tokens[b]...)
		id, exists := byBytes[string(joined)]
		if !exists {
			id = int32(len(tokens))
			tokens = append(tokens, joined)
			byBytes[string(joined)] = id
		}
		tr.merge(p, id)
		if !listed[p] {
			listed[p] = true
			merges = append(merges, [2]int32{a, b})
		}
	}
	st.Merges, st.MergeTime = len(merges), time.Since(start)
	var byteID [256]int32
	for b := range byteID {
		byteID[b] = int32(b)
	}
	var sp []Special
	for _, s := range cfg.SpecialTokens {
		sp = append(sp, Special{int32(len(tokens)), s})
		tokens = append(tokens, []byte(s))
	}
	t, err := build(tokens, byteID, merges, sp)
	if err != nil {
		return nil, st, fmt.Errorf("train tokenizer: %w", err)
	}
	return t, st, nil
}

// countPieces pre-tokenizes docs on `workers` goroutines, each counting
// into its own map, and sums the maps.
func countPieces(ctx context.Context, docs [][]byte, workers int) (map[string]int64, int64, error) {
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, len(docs)))
	maps := make([]map[string]int64, workers)
	npieces := make([]int64, workers)
	var next sync.Mutex
	nextDoc := 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := map[string]int64{}
			var n int64
			count := func(p []byte) {
				m[string(p)]++ // no allocation when the piece is known
				n++
			}
			for ctx.Err() == nil {
				next.Lock()
				d := nextDoc
				nextDoc++
				next.Unlock()
				if d >= len(docs) {
					break
				}
				// Long documents in 1 MiB pieces cut at a newline, so
				// one big file does not leave the other workers idle.
				doc := docs[d]
				for len(doc) > 0 {
					cut := len(doc)
					if cut > 1<<20 {
						cut = cutAtNewline(doc, 1<<20)
					}
					splitPieces(doc[:cut], count)
					doc = doc[cut:]
				}
			}
			maps[w], npieces[w] = m, n
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	total, n := maps[0], npieces[0]
	for w := 1; w < workers; w++ {
		for k, v := range maps[w] {
			total[k] += v
		}
		n += npieces[w]
	}
	if total == nil {
		total = map[string]int64{}
	}
	return total, n, nil
}

// cutAtNewline is where to cut doc near limit so the cut does not change
// the pre-tokens: just after a newline with a non-space character on
// each side. That newline is a whitespace run of one, a piece of its own
// whether or not the text ends after it (a longer run at the end of a
// part would keep its last character, which it gives to the next piece
// in the whole text). Without such a newline, the whole doc.
func cutAtNewline(doc []byte, limit int) int {
	for i := limit; i+1 < len(doc); i++ {
		if doc[i] != '\n' || i == 0 {
			continue
		}
		r, _ := utf8.DecodeLastRune(doc[:i])
		if unicode.IsSpace(r) {
			continue
		}
		if c, _ := classAt(doc, i+1); c != classSpace {
			return i + 1
		}
	}
	return len(doc)
}

// word is one distinct pre-token as a sequence of token ids, with its
// count in the corpus.
type word struct {
	syms []int32
	freq int64
}

func pairOf(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

type trainer struct {
	words []word
	count map[uint64]int64   // pair → occurrences (weighted by word counts)
	where map[uint64][]int32 // pair → words that held it when it was counted (may repeat, may be stale)
	queue pairQueue
	seen  []uint32 // per word: the merge that last visited it, to skip repeats in where
	stamp uint32
}

func newTrainer(counts map[string]int64) *trainer {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, strings.Compare) // word order fixed, whatever the map did
	tr := &trainer{words: make([]word, len(keys)), count: map[uint64]int64{}, where: map[uint64][]int32{},
		seen: make([]uint32, len(keys))}
	for i, k := range keys {
		syms := make([]int32, len(k))
		for j := 0; j < len(k); j++ {
			syms[j] = int32(k[j])
		}
		f := counts[k]
		tr.words[i] = word{syms, f}
		for j := 0; j+1 < len(syms); j++ {
			p := pairOf(syms[j], syms[j+1])
			tr.count[p] += f
			if w := tr.where[p]; len(w) == 0 || w[len(w)-1] != int32(i) {
				tr.where[p] = append(w, int32(i))
			}
		}
	}
	tr.queue = make(pairQueue, 0, len(tr.count))
	for p, c := range tr.count {
		tr.queue = append(tr.queue, pairCount{c, p})
	}
	heap.Init(&tr.queue)
	return tr
}

// best pops the most frequent pair (ties: the smaller pair), skipping
// queue entries whose count is stale: an entry is pushed whenever a
// pair's count grows, and one whose count shrank is pushed again with its
// current count when it comes up.
func (tr *trainer) best(minFreq int64) (uint64, bool) {
	for tr.queue.Len() > 0 {
		top := heap.Pop(&tr.queue).(pairCount)
		c := tr.count[top.pair]
		if c == top.count {
			if c < minFreq {
				return 0, false
			}
			return top.pair, true
		}
		if c > 0 && c < top.count {
			heap.Push(&tr.queue, pairCount{c, top.pair})
		}
	}
	return 0, false
}

// merge replaces every occurrence of pair p (left to right inside each
// word) by the new token id and updates the counts of the pairs around
// each occurrence, as Hugging Face's Word::merge does.
func (tr *trainer) merge(p uint64, id int32) {
	a, b := int32(p>>32), int32(uint32(p))
	tr.stamp++
	grown := map[uint64]bool{}
	add := func(q uint64, d int64, w int32) {
		tr.count[q] += d
		if d > 0 {
			grown[q] = true
			if ws := tr.where[q]; len(ws) == 0 || ws[len(ws)-1] != w {
				tr.where[q] = append(ws, w)
			}
		}
	}
	for _, wi := range tr.where[p] {
		if tr.seen[wi] == tr.stamp {
			continue
		}
		tr.seen[wi] = tr.stamp
		w := &tr.words[wi]
		s, f := w.syms, w.freq
		out := s[:0]
		for i := 0; i < len(s); i++ {
			if i+1 < len(s) && s[i] == a && s[i+1] == b {
				if len(out) > 0 {
					prev := out[len(out)-1]
					add(pairOf(prev, a), -f, wi)
					add(pairOf(prev, id), f, wi)
				}
				if i+2 < len(s) {
					add(pairOf(b, s[i+2]), -f, wi)
					add(pairOf(id, s[i+2]), f, wi)
				}
				out = append(out, id)
				i++
				continue
			}
			out = append(out, s[i])
		}
		w.syms = out
	}
	delete(tr.count, p)
	delete(tr.where, p)
	// Push grown pairs in a fixed order (the queue breaks count ties by
	// pair, so the order only matters for the queue's layout).
	qs := make([]uint64, 0, len(grown))
	for q := range grown {
		qs = append(qs, q)
	}
	slices.Sort(qs)
	for _, q := range qs {
		if c := tr.count[q]; c > 0 {
			heap.Push(&tr.queue, pairCount{c, q})
		}
	}
}

type pairCount struct {
	count int64
	pair  uint64
}

// pairQueue is a max-heap by count, then min by pair.
type pairQueue []pairCount

func (q pairQueue) Len() int { return len(q) }
func (q pairQueue) Less(i, j int) bool {
	if q[i].count != q[j].count {
		return q[i].count > q[j].count
	}
	return q[i].pair < q[j].pair
}
func (q pairQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *pairQueue) Push(x any)   { *q = append(*q, x.(pairCount)) }
func (q *pairQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
