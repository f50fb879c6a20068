package transport_test

import (
	"testing"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/transport/transporttest"
)

func TestPipeConformance(t *testing.T) {
	for _, buf := range []int{0, 1} {
		t.Run("buffer="+map[int]string{0: "default", 1: "1B"}[buf], func(t *testing.T) {
			transporttest.Run(t, func(t *testing.T) (a, b transport.Conn) {
				return transport.Pipe(transport.PipeOptions{BufferBytes: buf})
			})
		})
	}
}

func TestPipeOptionsValidate(t *testing.T) {
	if err := (transport.PipeOptions{BufferBytes: -1}).Validate(); err == nil {
		t.Fatal("BufferBytes=-1 validated; want an error naming the field")
	}
	if err := (transport.PipeOptions{}).Validate(); err != nil {
		t.Fatalf("zero options: %v", err)
	}
}
