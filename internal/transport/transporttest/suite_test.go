package transporttest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/narrowband/narrowband/internal/transport"
)

// The suite must be able to fail: each broken Conn below violates one part
// of the contract, and the subtest that guards that part must catch it.
// Each runs in a child process, because a failing Run would fail this test.
func TestSuiteCatchesBrokenConns(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("running as a child of TestSuiteCatchesBrokenConns")
	}
	if testing.Short() {
		t.Skip("starts child test processes")
	}
	cases := []struct {
		broken, subtest, want string
	}{
		{"reorder", "Ordering", "order broken"},
		{"truncate", "Boundaries", "message boundaries or order broken"},
		{"alias", "Boundaries", "aliased"},
		{"miscount", "Stats", "Stats says"},
		{"leak", "CloseOwnSide", "goroutine(s) started during the test"},
		{"noeof", "CloseOwnSide", "did not return within"},
	}
	for _, c := range cases {
		t.Run("broken="+c.broken, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenHelper$/^"+c.subtest+"$", "-test.v")
			cmd.Env = append(os.Environ(), brokenEnv+"="+c.broken)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a Conn that is broken (%s):\n%s", c.broken, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("the suite failed, but not with %q:\n%s", c.want, out)
			}
		})
	}
}

const brokenEnv = "TRANSPORTTEST_BROKEN"

func TestBrokenHelper(t *testing.T) {
	kind := os.Getenv(brokenEnv)
	if kind == "" {
		t.Skip("helper process for TestSuiteCatchesBrokenConns")
	}
	Run(t, func(t *testing.T) (a, b transport.Conn) {
		ia, ib := transport.Pipe(transport.PipeOptions{})
		if kind == "leak" {
			stuck := make(chan struct{})
			go func() { <-stuck }() // never closed
		}
		if kind == "noeof" {
			// b's Close is the real one; a's Close never reaches the peer.
			return &broken{Conn: ia, kind: kind}, ib
		}
		return &broken{Conn: ia, kind: kind}, &broken{Conn: ib, kind: kind}
	})
}

// broken wraps a working Conn and breaks it in one way.
type broken struct {
	transport.Conn
	kind    string
	held    []byte // reorder: a message waiting to go out after the next
	last    []byte // alias: the caller's slice from the previous Send
	ownShut bool
}

func (c *broken) Send(ctx context.Context, msg []byte) error {
	if c.ownShut {
		return transport.ErrClosed
	}
	switch c.kind {
	case "reorder":
		if c.held == nil {
			c.held = append([]byte{}, msg...)
			return nil
		}
		if err := c.Conn.Send(ctx, msg); err != nil {
			return err
		}
		h := c.held
		c.held = nil
		return c.Conn.Send(ctx, h)
	case "truncate":
		if len(msg) > 1000 {
			msg = msg[:len(msg)-1]
		}
	case "alias":
		// Sends the previous caller slice, which the caller may have
		// overwritten: a transport that keeps references instead of copies.
		prev := c.last
		c.last = msg
		if prev == nil {
			return nil
		}
		return c.Conn.Send(ctx, prev)
	}
	return c.Conn.Send(ctx, msg)
}

func (c *broken) Stats() transport.Stats {
	s := c.Conn.Stats()
	if c.kind == "miscount" {
		s.BytesSent += 1
	}
	return s
}

func (c *broken) Close() error {
	if c.kind == "noeof" {
		c.ownShut = true
		return nil
	}
	return c.Conn.Close()
}

func (c *broken) Recv(ctx context.Context) ([]byte, error) {
	if c.ownShut {
		return nil, transport.ErrClosed
	}
	return c.Conn.Recv(ctx)
}
