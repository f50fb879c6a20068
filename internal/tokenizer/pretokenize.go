package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// GPT-2 pre-tokenization splits text into the pieces BPE runs inside,
// with the regular expression
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// (first matching alternative at each position, greedy). Go's regexp has
// no lookahead, so splitPieces is a hand-written scanner with the same
// result; TestSplitMatchesRegex and FuzzSplit compare it with the
// expression evaluated alternative by alternative. \s is Unicode
// White_Space (unicode.IsSpace), as in the Rust regex Hugging Face's
// tokenizers use. Bytes that are not valid UTF-8 count as one
// [^\s\p{L}\p{N}] character each (as U+FFFD in Go's regexp), so every
// byte sequence is split and round-trips.

type charClass uint8

const (
	classOther charClass = iota // [^\s\p{L}\p{N}], and invalid UTF-8 bytes
	classLetter
	classNumber
	classSpace
)

var asciiClass = func() (t [utf8.RuneSelf]charClass) {
	for c := range t {
		r := rune(c)
		switch {
		case unicode.IsLetter(r):
			t[c] = classLetter
		case unicode.IsNumber(r):
			t[c] = classNumber
		case unicode.IsSpace(r):
			t[c] = classSpace
		}
	}
	return t
}()

// classAt is the class and byte length of the character at text[i].
func classAt(text []byte, i int) (charClass, int) {
	if c := text[i]; c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, n := utf8.DecodeRune(text[i:])
	switch {
	case r == utf8.RuneError && n == 1:
		return classOther, 1
	case unicode.IsLetter(r):
		return classLetter, n
	case unicode.IsNumber(r):
		return classNumber, n
	case unicode.IsSpace(r):
		return classSpace, n
	}
	return classOther, n
}

// contraction is the length of the contraction suffix ('s 't 're 've 'm
// 'll 'd, without the apostrophe) at the start of b, or 0.
func contraction(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	switch b[0] {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if len(b) > 1 && b[1] == 'e' {
			return 2
		}
	case 'l':
		if len(b) > 1 && b[1] == 'l' {
			return 2
		}
	}
	return 0
}

// splitPieces calls fn with each pre-token of text, in order; the pieces
// are subslices of text and concatenate to it.
func splitPieces(text []byte, fn func(piece []byte)) {
	n := len(text)
	for i := 0; i < n; {
		// 's|'t|'re|'ve|'m|'ll|'d
		if text[i] == '\'' {
			if k := contraction(text[i+1:]); k > 0 {
				fn(text[i : i+1+k])
				i += 1 + k
				continue
			}
		}
		// ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+': one optional space,
		// then a run of one class.
		cls, _ := classAt(text, i)
		j := i
		if text[i] == ' ' && i+1 < n {
			if c, _ := classAt(text, i+1); c != classSpace {
				cls, j = c, i+1
			}
		}
		if cls != classSpace {
			k := j
			for k < n {
				c, s := classAt(text, k)
				if c != cls {
					break
				}
				k += s
			}
			fn(text[i:k])
			i = k
			continue
		}
		// \s+(?!\S)|\s+: a whitespace run; unless it ends the text, its
		// last character is left to start the next piece (so " word"
		// keeps its space), but a run of one is a piece of its own.
		k, last, count := i, i, 0
		for k < n {
			c, s := classAt(text, k)
			if c != classSpace {
				break
			}
			last = k
			k += s
			count++
		}
		if k < n && count > 1 {
			k = last
		}
		fn(text[i:k])
		i = k
	}
}
