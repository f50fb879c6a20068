package transport_test

import (
	"context"
	"fmt"
	"time"

	"github.com/narrowband/narrowband/internal/transport"
)

// Two stages in one process over a shaped home link: 60 Mbit/s, 25 ms.
func Example() {
	a, b := transport.Pipe(transport.PipeOptions{})
	shaped, err := transport.Shape(a, transport.LinkProfile{BandwidthMbps: 60, LatencyMs: 25}, transport.ShapeOptions{Seed: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	ctx := context.Background()

	start := time.Now()
	activation := make([]byte, 750_000) // 6 Mbit: 100 ms on the link
	if err := shaped.Send(ctx, activation); err != nil {
		fmt.Println(err)
		return
	}
	msg, err := b.Recv(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	took := time.Since(start)
	fmt.Println(len(msg), "bytes arrived after at least 125 ms:", took >= 125*time.Millisecond)

	shaped.Close()
	_, err = b.Recv(ctx)
	fmt.Println("then:", err)
	// Output:
	// 750000 bytes arrived after at least 125 ms: true
	// then: EOF
}
