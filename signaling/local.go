//go:build !js

package signaling

import (
	"context"
	"fmt"
)

// Local is an in-process member of a room: a coordinator running inside the
// signaling server's process joins with Attach and then sees and does what a
// websocket peer would, without a socket.
type Local struct {
	s  *Server
	m  *member
	in *inbox
}

// Attach joins room as peerID from inside the process.
func (s *Server) Attach(roomName, peerID string) (*Local, error) {
	if err := ValidID(roomName); err != nil {
		return nil, fmt.Errorf("signaling: attach: room: %w", err)
	}
	if err := ValidID(peerID); err != nil {
		return nil, fmt.Errorf("signaling: attach: peer ID: %w", err)
	}
	l := &Local{s: s, in: newInbox(s.cfg.Logger.With("room", roomName, "peer", peerID))}
	l.m = &member{id: peerID, room: roomName, deliver: l.in.put}
	s.mu.Lock()
	s.locals[l] = struct{}{}
	s.mu.Unlock()
	others, err := s.join(l.m)
	if err != nil {
		s.mu.Lock()
		delete(s.locals, l)
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: attach %s to room %s: %v", ErrRefused, peerID, roomName, err)
	}
	l.in.put(Message{Type: TypeWelcome, From: peerID, Peers: others})
	return l, nil
}

// ID is this member's peer ID.
func (l *Local) ID() string { return l.m.id }

// Send relays m to m.To (From is set to this member's ID).
func (l *Local) Send(ctx context.Context, m Message) error {
	if err := l.in.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !relayed(m.Type) || m.To == "" {
		return fmt.Errorf("signaling: Send: type %q to %q: only offer, answer, candidate and message with a recipient can be sent", m.Type, m.To)
	}
	return l.s.relay(l.m, m)
}

// Recv returns the next welcome, join, leave, message or error.
func (l *Local) Recv(ctx context.Context) (Message, error) { return l.in.recv(ctx) }

// Signals returns offers, answers and candidates sent by peer.
func (l *Local) Signals(peer string) <-chan Message { return l.in.Signals(peer) }

// Peers returns the other members of the room, sorted.
func (l *Local) Peers() []string { return l.in.Peers() }

// Done is closed when the member has left the room.
func (l *Local) Done() <-chan struct{} { return l.in.done }

// Err says why the member left, nil while it is in the room.
func (l *Local) Err() error { return l.in.Err() }

// Close leaves the room. It is idempotent.
func (l *Local) Close() error {
	l.in.close(ErrClosed)
	l.s.leave(l.m)
	l.s.mu.Lock()
	delete(l.s.locals, l)
	l.s.mu.Unlock()
	return nil
}
