//go:build linux

package data

import (
	"os"
	"syscall"
)

// mapFile maps a file read-only, or reads it where mapping fails (an
// empty file, a file system without mmap).
func mapFile(path string) ([]byte, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if size := st.Size(); size > 0 && int64(int(size)) == size {
		if b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED); err == nil {
			return b, func() error { return syscall.Munmap(b) }, nil
		}
	}
	return readAll(f)
}
