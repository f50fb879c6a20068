package compression

// goldenBasisBits pins NewBasis(7, 8, 2).U[0], U[15] and
// Embeddings(7, 4, 8, 0.02)[0], [31].
var goldenBasisBits = []uint32{0xbf08da69, 0xbe743b9e, 0xbca5e832, 0xbc00f63a}
