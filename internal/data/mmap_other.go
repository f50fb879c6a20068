//go:build !linux

package data

import "os"

// mapFile reads a file whole (mapping is Linux-only here).
func mapFile(path string) ([]byte, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	return readAll(f)
}
