package compression

// goldenBasisHash is the FNV-64a hash of the bits of NewBasis(7, 64, 8).U
// followed by Embeddings(7, 16, 64, 0.02).
const goldenBasisHash uint64 = 0x10a4bf845485d2c0
