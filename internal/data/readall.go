package data

import (
	"io"
	"os"
)

// readAll is mapFile's fallback: the file read into memory.
func readAll(f *os.File) ([]byte, func() error, error) {
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}
