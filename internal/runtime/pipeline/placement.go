package pipeline

import (
	"context"

	"github.com/narrowband/narrowband/internal/identity"
	"github.com/narrowband/narrowband/internal/transport"
)

// Placement is where a pipeline's stages run, as a launcher set them up:
// the driver's control link to each stage, and what can be done when a
// stage's holder fails. The pipeline owns this interface, as
// hashicorp/raft's consumer owns its Transport: InProcess (goroutines and
// pipes) lives beside it; package launch implements it for one OS process
// per stage and for WebRTC peers.
type Placement interface {
	// Control is the driver's control link to each stage, in stage order.
	Control() []transport.Conn
	// Holders names who holds each stage, in stage order. Workers use the
	// names to re-establish links (WebRTC peers dial each other by name).
	Holders() []string
	// Address describes where the holders run, for the web view
	// ("in-process", "127.0.0.1 (own process)", "WebRTC").
	Address() string
	// Spares lists the peers that could take over a stage now, in the
	// order to try them; nil where stages cannot change hands.
	Spares() []string
	// CanHandOver reports whether a failed stage can go to another peer.
	CanHandOver() bool
	// Claim connects the driver's control link to spare, which holds no
	// stage yet.
	Claim(ctx context.Context, spare string) (transport.Conn, error)
	// Setup makes the claimed spare on c the holder of stage, holders
	// naming every stage's holder after the change, and returns once it
	// is ready. The stage's neighbours relink to it meanwhile: the driver
	// asks them to between Claim and Setup.
	Setup(ctx context.Context, c transport.Conn, stage int, holders []string) error
	// Kill stops a holder at once, as SIGKILL does: an injected fault, or
	// a peer evicted for bad data. ErrCannotKill if it is not a process
	// of this run.
	Kill(holder string) error
	// Key is the identity key holder proved when it joined; "" for the
	// run's own goroutines and processes (the coordinator's key stands
	// for them).
	Key(holder string) identity.Public
	// JoinCommand is what starts a peer that can join this run, shown
	// while the run waits for one; "" where no peer can join.
	JoinCommand() string
	// Close stops everything the placement started.
	Close() error
}
