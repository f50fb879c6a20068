package scheduler

import (
	"fmt"
	"slices"
)

// Layout is the shape of a pipeline: the block range each stage holds and
// which stages are linked. It is the one description every part of a run
// reads (the engine, the workers, the launchers, the membership machine),
// so "how many stages" and "who talks to whom" are answered in one place.
//
// Stage i talks to i-1 and i+1 (activations forward, gradients back), and
// the first and last stage exchange the tied embedding's gradient: over
// their own link when S > 2, over their one neighbour link when S = 2.
type Layout struct {
	ranges []Range
}

// NewLayout checks that ranges cut blocks [0, n) into consecutive,
// non-empty stages.
func NewLayout(ranges []Range) (Layout, error) {
	if len(ranges) == 0 {
		return Layout{}, fmt.Errorf("layout: no stages: %w", ErrBadSplit)
	}
	for i, r := range ranges {
		want := 0
		if i > 0 {
			want = ranges[i-1].Hi
		}
		if r.Lo != want || r.Hi <= r.Lo {
			return Layout{}, fmt.Errorf("layout: stage %d holds %v; stages must be non-empty and follow each other from block 0: %w", i, r, ErrBadSplit)
		}
	}
	return Layout{ranges: slices.Clone(ranges)}, nil
}

// Stages is S, the number of stages.
func (l Layout) Stages() int { return len(l.ranges) }

// Ranges lists each stage's blocks (a copy).
func (l Layout) Ranges() []Range { return slices.Clone(l.ranges) }

// Range is stage i's blocks.
func (l Layout) Range(i int) Range { return l.ranges[i] }

// Blocks is the model's number of blocks.
func (l Layout) Blocks() int {
	if len(l.ranges) == 0 {
		return 0
	}
	return l.ranges[len(l.ranges)-1].Hi
}

// First and Last report whether stage i holds the embeddings / the head.
func (l Layout) First(i int) bool { return i == 0 }
func (l Layout) Last(i int) bool  { return i == len(l.ranges)-1 }

// Prev is the stage before i, -1 for the first.
func (l Layout) Prev(i int) int { return i - 1 }

// Next is the stage after i, -1 for the last.
func (l Layout) Next(i int) int {
	if l.Last(i) {
		return -1
	}
	return i + 1
}

// Tied is the other end of the tied embedding for stage i: the last stage
// for the first and the first for the last, -1 for every other stage and
// in a 1-stage pipeline.
func (l Layout) Tied(i int) int {
	S := len(l.ranges)
	switch {
	case S < 2:
		return -1
	case i == 0:
		return S - 1
	case i == S-1:
		return 0
	}
	return -1
}

// TiedOwnLink reports whether the tied embedding's gradient needs a link of
// its own (S > 2); with S = 2 it shares the one link between the stages.
func (l Layout) TiedOwnLink() bool { return len(l.ranges) > 2 }

// Neighbours lists the stages stage i has links to, in a fixed order:
// previous, next, then the tied end when it has its own link.
func (l Layout) Neighbours(i int) []int {
	var nb []int
	if p := l.Prev(i); p >= 0 {
		nb = append(nb, p)
	}
	if n := l.Next(i); n >= 0 {
		nb = append(nb, n)
	}
	if t := l.Tied(i); t >= 0 && l.TiedOwnLink() {
		nb = append(nb, t)
	}
	return nb
}
