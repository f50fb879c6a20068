package stages

// encoderForward writes token embedding + position embedding for each of
// the B·T positions.
//
//	out (B, T, C), tokens (B, T), wte (V, C), wpe (maxT, C)
func encoderForward(out []float32, tokens []int32, wte, wpe []float32, B, T, C int) {
	for b := 0; b < B; b++ {
		for t := 0; t < T; t++ {
			o := out[(b*T+t)*C : (b*T+t)*C+C]
			e := wte[int(tokens[b*T+t])*C : int(tokens[b*T+t])*C+C]
			p := wpe[t*C : t*C+C]
			for i := range o {
				o[i] = e[i] + p[i]
			}
		}
	}
}

// encoderBackward adds dout into the rows of dwte and dwpe that forward
// read, in position order so repeated tokens sum the same way every time.
//
//	dwte (V, C), dwpe (maxT, C), dout (B, T, C), tokens (B, T)
func encoderBackward(dwte, dwpe, dout []float32, tokens []int32, B, T, C int) {
	for b := 0; b < B; b++ {
		for t := 0; t < T; t++ {
			d := dout[(b*T+t)*C : (b*T+t)*C+C]
			e := dwte[int(tokens[b*T+t])*C : int(tokens[b*T+t])*C+C]
			p := dwpe[t*C : t*C+C]
			for i, v := range d {
				e[i] += v
				p[i] += v
			}
		}
	}
}

// tokenEmbedForward copies each position's token embedding (a Llama has
// no position table: positions enter through the rotary embedding).
//
//	out (N, C), tokens (N), wte (V, C)
func tokenEmbedForward(out []float32, tokens []int32, wte []float32, N, C int) {
	for n := 0; n < N; n++ {
		t := int(tokens[n])
		copy(out[n*C:n*C+C], wte[t*C:t*C+C])
	}
}

// tokenEmbedBackward adds dout into the rows of dwte that forward read,
// in position order so repeated tokens sum the same way every time.
//
//	dwte (V, C), dout (N, C), tokens (N)
func tokenEmbedBackward(dwte, dout []float32, tokens []int32, N, C int) {
	for n := 0; n < N; n++ {
		t := int(tokens[n])
		e := dwte[t*C : t*C+C]
		for i, v := range dout[n*C : n*C+C] {
			e[i] += v
		}
	}
}
