package tokenizer

import "unicode/utf8"

// byteRune is GPT-2's bytes_to_unicode: every byte gets a printable rune,
// so a token's bytes can be written as a string in the vocabulary. The
// printable ASCII and Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') are
// themselves; the other 68 (control bytes, space, DEL, NBSP, soft hyphen)
// map in byte order to U+0100, U+0101, …: space is 'Ġ' (U+0120), '\n'
// is 'Ċ' (U+010A).
var byteRune = func() (m [256]rune) {
	n := 0
	for b := 0; b < 256; b++ {
		if ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}()

// runeByte inverts byteRune.
var runeByte = func() map[rune]byte {
	m := make(map[rune]byte, 256)
	for b, r := range byteRune {
		m[r] = byte(b)
	}
	return m
}()

// byteLevelString is the vocabulary spelling of a token's bytes.
func byteLevelString(b []byte) string {
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = utf8.AppendRune(out, byteRune[c])
	}
	return string(out)
}

// byteLevelBytes is the inverse of byteLevelString; ok is false when s
// holds a rune that is not one of byteRune's.
func byteLevelBytes(s string) (b []byte, ok bool) {
	b = make([]byte, 0, len(s))
	for _, r := range s {
		c, found := runeByte[r]
		if !found {
			return nil, false
		}
		b = append(b, c)
	}
	return b, true
}
