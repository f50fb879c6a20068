package rtc

import (
	"context"
	"sync"

	"github.com/narrowband/narrowband/internal/transport"
)

// recvQueue holds complete messages between the reader and Recv, under a
// byte budget (one producer, one consumer).
type recvQueue struct {
	mu     sync.Mutex
	msgs   [][]byte
	bytes  int
	budget int
	err    error // why no more messages will come (io.EOF on a clean close)
	avail  chan struct{}
	space  chan struct{}
}

func newRecvQueue(budget int) *recvQueue {
	return &recvQueue{budget: budget, avail: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (q *recvQueue) push(msg []byte, closing <-chan struct{}) error {
	for {
		q.mu.Lock()
		if len(q.msgs) == 0 || q.bytes+len(msg) <= q.budget {
			q.msgs = append(q.msgs, msg)
			q.bytes += len(msg)
			q.mu.Unlock()
			notify(q.avail)
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-closing:
			return transport.ErrClosed
		}
	}
}

func (q *recvQueue) failure() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

func (q *recvQueue) finish(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
	notify(q.avail)
}

func (q *recvQueue) pop(ctx context.Context, closing <-chan struct{}) ([]byte, error) {
	for {
		q.mu.Lock()
		if len(q.msgs) > 0 {
			msg := q.msgs[0]
			q.msgs[0] = nil
			q.msgs = q.msgs[1:]
			q.bytes -= len(msg)
			q.mu.Unlock()
			notify(q.space)
			return msg, nil
		}
		err := q.err
		q.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-q.avail:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-closing:
			return nil, transport.ErrClosed
		}
	}
}
