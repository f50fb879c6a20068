package tokenizer

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// ws is \s as Unicode White_Space (the class unicode.IsSpace tests).
const ws = `\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`

var gpt2Alternatives = []*regexp.Regexp{
	regexp.MustCompile(`^(?:'s|'t|'re|'ve|'m|'ll|'d)`),
	regexp.MustCompile(`^ ?\p{L}+`),
	regexp.MustCompile(`^ ?\p{N}+`),
	regexp.MustCompile(`^ ?[^` + ws + `\p{L}\p{N}]+`),
}

var wsRun = regexp.MustCompile(`^[` + ws + `]+`)

// regexPieces evaluates the GPT-2 expression as a backtracking engine
// would: at each position the first alternative that matches, each greedy;
// \s+(?!\S) backtracks from the longest whitespace run to the longest
// prefix not followed by a non-space; \s+ last.
func regexPieces(text []byte) [][]byte {
	var out [][]byte
	for i := 0; i < len(text); {
		rest := text[i:]
		n := 0
		for _, re := range gpt2Alternatives {
			if m := re.Find(rest); m != nil {
				n = len(m)
				break
			}
		}
		if n == 0 {
			run := wsRun.Find(rest)
			if run == nil {
				panic("no alternative matched: the expression covers every character")
			}
			// Offsets where the run's characters end, longest first.
			var ends []int
			for k := range string(run) {
				if k > 0 {
					ends = append(ends, k)
				}
			}
			ends = append(ends, len(run))
			n = len(run) // \s+ if the lookahead never holds
			for e := len(ends) - 1; e >= 0; e-- {
				after := rest[ends[e]:]
				if len(after) == 0 || wsRun.Match(after) {
					n = ends[e]
					break
				}
			}
		}
		out = append(out, rest[:n])
		i += n
	}
	return out
}

func pieces(text []byte) [][]byte {
	var out [][]byte
	splitPieces(text, func(p []byte) { out = append(out, p) })
	return out
}

func comparePieces(t *testing.T, text []byte) {
	t.Helper()
	got, want := pieces(text), regexPieces(text)
	if len(got) != len(want) {
		t.Fatalf("%q: %d pieces %q, regex %d %q", text, len(got), got, len(want), want)
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%q: piece %d is %q, regex %q (all: %q vs %q)", text, i, got[i], want[i], got, want)
		}
	}
}

func TestSplitMatchesRegex(t *testing.T) {
	cases := []string{
		"", "a", " ", "  ", "hello world", "Hello, World!", "don't", "I'll we've they're he'd she's it'T 'S",
		"'", "''s", " 's", "x.'s", "'re'll'", "a   b", "a \n\nb", "a\n\n", "a \t b", "\n\nfunc main() {\n\treturn x+1\n}\n",
		"123abc 456 7.8e9", " 1 2  3", "   leading", "trailing   ", "tab\tsep", "mixed \u00a0nbsp\u3000ideographic",
		"ünïcödé wörds", "日本語のテキスト", "emoji 🙂🙃 !!", "Ⅻ ½ ٣", "x\u2028y\u2029z", "café's", "\r\n\r\n",
		"\xff\xfe invalid \xc3", "\xe2\x82", "a\xffb", " \xff", "\xef\xbf\xbd", strings.Repeat(" ", 1000) + "x",
		strings.Repeat("\n", 10), "x" + strings.Repeat(" \t", 7),
	}
	for _, c := range cases {
		comparePieces(t, []byte(c))
	}
}

// Concatenating the pieces gives back the text, and the splitter agrees
// with the expression on any bytes.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{"hello world", "don't  stop\n\n", "\xff\x00 'll", "日本 123 ..."} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		if !bytes.Equal(bytes.Join(pieces(text), nil), text) {
			t.Fatalf("%q: pieces do not concatenate to the text", text)
		}
		comparePieces(t, text)
	})
}

// The regex's \s is White_Space; unicode.IsSpace must be the same set.
func TestSpaceClass(t *testing.T) {
	re := regexp.MustCompile(`^[` + ws + `]$`)
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if re.MatchString(string(r)) != unicode.IsSpace(r) {
			t.Fatalf("U+%04X: regex class %v, unicode.IsSpace %v", r, !unicode.IsSpace(r), unicode.IsSpace(r))
		}
	}
}
