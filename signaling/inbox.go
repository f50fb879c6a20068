package signaling

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
)

// inboxEvents bounds queued membership and "message" traffic; a consumer
// that falls this far behind is dropped (ErrClosed with a reason).
const inboxEvents = 4096

// inboxSignals bounds queued WebRTC signals from one peer. A set-up needs a
// few dozen; beyond that they are dropped (stale sessions).
const inboxSignals = 256

// inbox sorts what a member receives: WebRTC signals per sending peer, the
// rest in one stream. It also tracks the room's membership.
type inbox struct {
	log    *slog.Logger
	events chan Message

	mu      sync.Mutex
	signals map[string]chan Message
	peers   map[string]bool
	err     error
	done    chan struct{}
}

func newInbox(log *slog.Logger) *inbox {
	return &inbox{
		log:     log,
		events:  make(chan Message, inboxEvents),
		signals: map[string]chan Message{},
		peers:   map[string]bool{},
		done:    make(chan struct{}),
	}
}

// put files m; false means the inbox overflowed and was shut.
func (in *inbox) put(m Message) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.err != nil {
		return false
	}
	switch m.Type {
	case TypeWelcome:
		for _, p := range m.Peers {
			in.peers[p] = true
		}
	case TypeJoin:
		in.peers[m.From] = true
	case TypeLeave:
		delete(in.peers, m.From)
	}
	if isSignal(m.Type) && m.From != "" {
		ch := in.signalsLocked(m.From)
		select {
		case ch <- m:
		default:
			in.log.Warn("signaling: dropping WebRTC signal; nobody is connecting to this peer", "from", m.From, "type", m.Type)
		}
		return true
	}
	select {
	case in.events <- m:
		return true
	default:
		in.closeLocked(fmt.Errorf("%w: more than %d unread events; call Recv", ErrClosed, inboxEvents))
		return false
	}
}

func (in *inbox) signalsLocked(from string) chan Message {
	ch := in.signals[from]
	if ch == nil {
		ch = make(chan Message, inboxSignals)
		in.signals[from] = ch
	}
	return ch
}

// Signals returns the channel of offers, answers and candidates from peer.
func (in *inbox) Signals(peer string) <-chan Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.signalsLocked(peer)
}

func (in *inbox) close(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closeLocked(err)
}

func (in *inbox) closeLocked(err error) {
	if in.err == nil {
		in.err = err
		close(in.done)
	}
}

// recv returns the next event, or the close error once the queue is drained.
func (in *inbox) recv(ctx context.Context) (Message, error) {
	select {
	case m := <-in.events:
		return m, nil
	default:
	}
	select {
	case m := <-in.events:
		return m, nil
	case <-in.done:
		select {
		case m := <-in.events:
			return m, nil
		default:
		}
		return Message{}, in.Err()
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// Err returns why the inbox closed, nil while open.
func (in *inbox) Err() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.err
}

// Peers returns the other members of the room, sorted.
func (in *inbox) Peers() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]string, 0, len(in.peers))
	for p := range in.peers {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
