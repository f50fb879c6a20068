package web

// history is the bounded record of a run's steps that a tab opened mid-run
// receives. Every step is kept until there are more than max; then the older
// half is thinned by dropping every other point, so memory stays bounded and
// old steps become progressively sparser while the recent curve stays exact.
// Steps with a held-out loss are kept preferentially: they are rare and the
// val curve is what people compare runs by.
type history struct {
	max     int
	entries []histEntry
}

type histEntry struct {
	step int
	val  bool   // has val_loss
	json []byte // compact encoding, without per-stage and per-link stats
}

func (h *history) add(e histEntry) {
	h.entries = append(h.entries, e)
	if len(h.entries) > h.max {
		h.thin()
	}
}

// thin halves the density of the older half of the history. The first
// entry (the start of the curve) is always kept, and so is every val entry
// unless val entries alone fill more than half the budget.
func (h *history) thin() {
	half := len(h.entries) / 2
	vals := 0
	for _, e := range h.entries {
		if e.val {
			vals++
		}
	}
	keepVals := vals <= h.max/2
	out := h.entries[:0]
	for i, e := range h.entries {
		if i >= half || i%2 == 0 || (keepVals && e.val) {
			out = append(out, e)
		}
	}
	// Clear the tail so dropped encodings can be collected.
	for i := len(out); i < len(h.entries); i++ {
		h.entries[i] = histEntry{}
	}
	h.entries = out
	if len(h.entries) > h.max {
		// Only possible when val entries were kept and crowd the budget;
		// fall back to plain halving of the old half.
		half = len(h.entries) / 2
		out = h.entries[:0]
		for i, e := range h.entries {
			if i >= half || i%2 == 0 {
				out = append(out, e)
			}
		}
		for i := len(out); i < len(h.entries); i++ {
			h.entries[i] = histEntry{}
		}
		h.entries = out
	}
}

// ring keeps the last n items of a stream.
type ring[T any] struct {
	buf  []T
	next int  // where the next item goes
	full bool // buf has wrapped at least once
}

func newRing[T any](n int) ring[T] { return ring[T]{buf: make([]T, n)} }

func (r *ring[T]) push(v T) {
	if len(r.buf) == 0 {
		return
	}
	r.buf[r.next] = v
	r.next++
	if r.next == len(r.buf) {
		r.next = 0
		r.full = true
	}
}

// appendTo appends the kept items, oldest first.
func (r *ring[T]) appendTo(dst []T) []T {
	if r.full {
		dst = append(dst, r.buf[r.next:]...)
	}
	return append(dst, r.buf[:r.next]...)
}
