package pipeline

import (
	"encoding/binary"
	"fmt"
)

// idWidth is the bytes per token id in a batch or eval blob: one for a
// vocabulary of bytes (so byte runs send exactly what they always sent),
// two up to 65,536 ids, four above. Both sides derive it from
// model.vocab_size, which every worker's config holds.
func idWidth(vocab int) int {
	switch {
	case vocab <= 1<<8:
		return 1
	case vocab <= 1<<16:
		return 2
	}
	return 4
}

// putIDs writes ids little-endian at width w into b.
func putIDs(b []byte, ids []int32, w int) {
	for i, id := range ids {
		switch w {
		case 1:
			b[i] = byte(id)
		case 2:
			binary.LittleEndian.PutUint16(b[2*i:], uint16(id))
		default:
			binary.LittleEndian.PutUint32(b[4*i:], uint32(id))
		}
	}
}

// getIDs reads len(ids) ids of width w from b, refusing a wide one
// outside the vocabulary of V (it would index outside the embedding
// table); bytes pass as they always did.
func getIDs(ids []int32, b []byte, w, V int) error {
	if len(b) < len(ids)*w {
		return fmt.Errorf("blob has %d bytes, want %d ids of %d bytes", len(b), len(ids), w)
	}
	for i := range ids {
		var id uint32
		switch w {
		case 1:
			id = uint32(b[i])
		case 2:
			id = uint32(binary.LittleEndian.Uint16(b[2*i:]))
		default:
			id = binary.LittleEndian.Uint32(b[4*i:])
		}
		if w > 1 && int64(id) >= int64(V) {
			return fmt.Errorf("token id %d at %d is outside the vocabulary of %d", id, i, V)
		}
		ids[i] = int32(id)
	}
	return nil
}
