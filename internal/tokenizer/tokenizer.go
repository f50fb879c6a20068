package tokenizer

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
)

// Tokenizer is a byte-level BPE tokenizer: GPT-2 pre-tokenization, then
// merges inside each piece in rank order. Every byte sequence encodes
// (each byte has a token) and decodes back to itself. It is safe for
// concurrent use.
type Tokenizer struct {
	tokens  [][]byte          // id → bytes
	byteID  [256]int32        // byte → its one-byte token
	ranks   map[uint64]merged // pair of ids → the merge's rank and result
	merges  [][2]int32        // in rank order
	special []Special         // added tokens, by id

	mu    sync.RWMutex
	cache map[string][]int32 // piece → ids
}

// Special is a special (added) token: its id and text.
type Special struct {
	ID      int32
	Content string
}

type merged struct {
	rank int32
	id   int32
}

// ErrBadID is wrapped by Decode's error for an id outside the vocabulary.
var ErrBadID = errors.New("token id not in the vocabulary")

// cacheLimit bounds the encode cache (pieces, not bytes); pieces longer
// than cachePieceMax are never cached.
const (
	cacheLimit    = 1 << 20
	cachePieceMax = 64
)

// build checks and indexes a vocabulary: every merge's result must be a
// token whose bytes are its parts' bytes.
func build(tokens [][]byte, byteID [256]int32, merges [][2]int32, special []Special) (*Tokenizer, error) {
	t := &Tokenizer{tokens: tokens, byteID: byteID, merges: merges, special: special,
		ranks: make(map[uint64]merged, len(merges)), cache: map[string][]int32{}}
	byBytes := make(map[string]int32, len(tokens))
	isSpecial := map[int32]bool{}
	for _, s := range special {
		isSpecial[s.ID] = true
	}
	for id, b := range tokens {
		if !isSpecial[int32(id)] {
			byBytes[string(b)] = int32(id)
		}
	}
	for r, m := range merges {
		a, b := m[0], m[1]
		if a < 0 || b < 0 || int(a) >= len(tokens) || int(b) >= len(tokens) {
			return nil, fmt.Errorf("merge %d (%d, %d): id outside the vocabulary of %d", r, a, b, len(tokens))
		}
		id, ok := byBytes[string(tokens[a])+string(tokens[b])]
		if !ok {
			return nil, fmt.Errorf("merge %d (%q, %q): the vocabulary lacks the merged token", r, tokens[a], tokens[b])
		}
		if _, dup := t.ranks[pairOf(a, b)]; !dup {
			t.ranks[pairOf(a, b)] = merged{int32(r), id}
		}
	}
	return t, nil
}

// VocabSize is the number of token ids (0 … VocabSize−1).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// NumMerges is the number of merges.
func (t *Tokenizer) NumMerges() int { return len(t.merges) }

// Special lists the special tokens.
func (t *Tokenizer) Special() []Special { return append([]Special(nil), t.special...) }

// SpecialID is the id of the special token with this text.
func (t *Tokenizer) SpecialID(content string) (int32, bool) {
	for _, s := range t.special {
		if s.Content == content {
			return s.ID, true
		}
	}
	return 0, false
}

// Token is the bytes of token id (nil outside the vocabulary); the
// caller must not modify them.
func (t *Tokenizer) Token(id int32) []byte {
	if id < 0 || int(id) >= len(t.tokens) {
		return nil
	}
	return t.tokens[id]
}

// Encode returns the token ids of text. Special tokens' texts in it are
// encoded as ordinary bytes: special ids come only from the caller.
func (t *Tokenizer) Encode(text []byte) []int32 {
	return t.AppendEncode(nil, text)
}

// AppendEncode appends the token ids of text to dst.
func (t *Tokenizer) AppendEncode(dst []int32, text []byte) []int32 {
	var w bpeWork
	splitPieces(text, func(p []byte) {
		if len(p) == 1 {
			dst = append(dst, t.byteID[p[0]])
			return
		}
		if len(p) <= cachePieceMax {
			t.mu.RLock()
			ids, ok := t.cache[string(p)]
			t.mu.RUnlock()
			if ok {
				dst = append(dst, ids...)
				return
			}
		}
		n := len(dst)
		dst = t.bpe(&w, dst, p)
		if len(p) <= cachePieceMax {
			t.mu.Lock()
			if len(t.cache) < cacheLimit {
				t.cache[string(p)] = append([]int32(nil), dst[n:]...)
			}
			t.mu.Unlock()
		}
	})
	return dst
}

// Decode returns the bytes of ids (special tokens as their text).
func (t *Tokenizer) Decode(ids []int32) ([]byte, error) {
	var out []byte
	for i, id := range ids {
		if id < 0 || int(id) >= len(t.tokens) {
			return nil, fmt.Errorf("decode: id %d at position %d not in 0..%d: %w", id, i, len(t.tokens)-1, ErrBadID)
		}
		out = append(out, t.tokens[id]...)
	}
	return out, nil
}

// bpeWork is the scratch of one piece's merges.
type bpeWork struct {
	sym        []int32
	prev, next []int
	q          candQueue
}

// bpe appends the ids of one pre-token: start from its bytes, and apply
// merges lowest rank first (equal ranks: leftmost first), as Hugging
// Face's Word::merge_all, with a priority queue of candidate pairs on a
// linked list of symbols, so a long piece costs n·log n, not n².
func (t *Tokenizer) bpe(w *bpeWork, dst []int32, p []byte) []int32 {
	n := len(p)
	w.sym, w.prev, w.next, w.q = w.sym[:0], w.prev[:0], w.next[:0], w.q[:0]
	for i, c := range p {
		w.sym = append(w.sym, t.byteID[c])
		w.prev = append(w.prev, i-1)
		w.next = append(w.next, i+1)
	}
	w.next[n-1] = -1
	push := func(i int) {
		j := w.next[i]
		if j < 0 {
			return
		}
		if m, ok := t.ranks[pairOf(w.sym[i], w.sym[j])]; ok {
			heap.Push(&w.q, cand{m.rank, i, w.sym[i], w.sym[j], m.id})
		}
	}
	for i := 0; i < n-1; i++ {
		push(i)
	}
	for w.q.Len() > 0 {
		c := heap.Pop(&w.q).(cand)
		i := c.pos
		j := w.next[i]
		// Stale: the left symbol was merged into something else or
		// removed (sym -1), or its right neighbour changed.
		if w.sym[i] != c.left || j < 0 || w.sym[j] != c.right {
			continue
		}
		w.sym[i] = c.id
		w.sym[j] = -1
		w.next[i] = w.next[j]
		if k := w.next[j]; k >= 0 {
			w.prev[k] = i
		}
		if k := w.prev[i]; k >= 0 {
			push(k)
		}
		push(i)
	}
	for i := 0; i >= 0; i = w.next[i] {
		dst = append(dst, w.sym[i])
	}
	return dst
}

type cand struct {
	rank        int32
	pos         int
	left, right int32
	id          int32
}

type candQueue []cand

func (q candQueue) Len() int { return len(q) }
func (q candQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].pos < q[j].pos
}
func (q candQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *candQueue) Push(x any)   { *q = append(*q, x.(cand)) }
func (q *candQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
