package pipeline

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/narrowband/narrowband/internal/transport"
	"github.com/narrowband/narrowband/internal/wire"
)

// TestLargeControlMessagesArriveWhole: a control message larger than a
// transport message (a GPT-2-small stage's state is 170 MB) is sent in
// parts and arrives whole and bit-identical, with a heartbeat that slipped
// in between two parts delivered on its own.
func TestLargeControlMessagesArriveWhole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := transport.Pipe(transport.PipeOptions{})
	defer a.Close()
	defer b.Close()
	blob := make([]byte, 2*ctrlPartBytes+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	big, err := encodeCtrl(ctrlMsg{Kind: ctrlStateIs, Stage: 3, OptimStep: 7, blob: blob})
	if err != nil {
		t.Fatal(err)
	}
	if len(big) <= transport.MaxMessage/4 {
		t.Fatalf("test message of %d bytes is not large", len(big))
	}
	hb, _ := encodeCtrl(ctrlMsg{Kind: ctrlHeartbeat})
	go func() {
		// The parts by hand, with the heartbeat after the first.
		n := (len(big) + ctrlPartBytes - 1) / ctrlPartBytes
		for i := 0; i < n; i++ {
			chunk := big[i*ctrlPartBytes : min(len(big), (i+1)*ctrlPartBytes)]
			a.Send(ctx, wire.Append(nil, wire.Header{Type: wire.TypeControl, Stage: 3, Step: uint64(n), Micro: uint32(i + 1)}, chunk))
			if i == 0 {
				a.Send(ctx, hb)
			}
		}
		sendControl(ctx, a, big, 3) // and the same through sendControl
	}()
	var r controlReader
	got, err := r.read(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := decodeCtrl(got); err != nil || m.Kind != ctrlHeartbeat {
		t.Fatalf("first message: %v, %v; want the heartbeat", m.Kind, err)
	}
	for k := 0; k < 2; k++ {
		got, err = r.read(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		m, err := decodeCtrl(got)
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind != ctrlStateIs || m.OptimStep != 7 || !bytes.Equal(m.blob, blob) {
			t.Fatalf("message %d: kind %v, optim step %d, blob equal %v", k, m.Kind, m.OptimStep, bytes.Equal(m.blob, blob))
		}
	}
}

// TestBadControlPartsAreRefused: parts out of order, with a changing
// count, short in the middle, or claiming more than maxControl are an
// error, never a stitched-together message.
func TestBadControlPartsAreRefused(t *testing.T) {
	part := func(i, n, size int) []byte {
		return wire.Append(nil, wire.Header{Type: wire.TypeControl, Step: uint64(n), Micro: uint32(i)}, make([]byte, size))
	}
	for name, seq := range map[string][][]byte{
		"second part first": {part(2, 3, ctrlPartBytes)},
		"count changes":     {part(1, 3, ctrlPartBytes), part(2, 4, ctrlPartBytes)},
		"part skipped":      {part(1, 3, ctrlPartBytes), part(3, 3, 10)},
		"short middle part": {part(1, 3, ctrlPartBytes), part(2, 3, 10)},
		"one part of one":   {part(1, 1, 10)},
		"too many parts":    {part(1, maxControl/ctrlPartBytes+2, ctrlPartBytes)},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			a, b := transport.Pipe(transport.PipeOptions{})
			defer a.Close()
			defer b.Close()
			go func() {
				for _, p := range seq {
					a.Send(ctx, p)
				}
			}()
			var r controlReader
			_, err := r.read(ctx, b)
			if err == nil || !strings.Contains(err.Error(), "control part") {
				t.Fatalf("err = %v, want a refused control part", err)
			}
		})
	}
}
