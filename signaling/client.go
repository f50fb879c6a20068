//go:build !js

package signaling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Client is a peer's connection to the signaling server, joined to one room.
type Client struct {
	ws   *websocket.Conn
	id   string
	room string
	max  int
	in   *inbox
	// timeout is ClientOptions.ServerTimeout.
	timeout time.Duration

	wmu   sync.Mutex // gorilla allows one writer at a time
	once  sync.Once
	rdone chan struct{}
}

// Dial connects to rawURL (ws://HOST:PORT/ROOM or wss://…), proves
// knowledge of secret and joins the room as peerID.
func Dial(ctx context.Context, rawURL, peerID, secret string) (*Client, error) {
	return DialOptions(ctx, rawURL, peerID, secret, ClientOptions{})
}

// DialOptions is Dial with options.
func DialOptions(ctx context.Context, rawURL, peerID, secret string, opt ClientOptions) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("signaling: dial: bad URL %q: %w", rawURL, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return nil, fmt.Errorf("signaling: dial: URL %q must start with ws:// or wss://", rawURL)
	}
	room := strings.TrimPrefix(u.Path, "/")
	if err := ValidID(room); err != nil {
		return nil, fmt.Errorf("signaling: dial: room in URL %q: %w", rawURL, err)
	}
	if err := ValidID(peerID); err != nil {
		return nil, fmt.Errorf("signaling: dial: peer ID: %w", err)
	}
	key := opt.Key
	if key == nil && opt.JoinToken == "" {
		if key, err = DeriveKey(secret); err != nil {
			return nil, err
		}
	}
	if opt.MaxMessageBytes == 0 {
		opt.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.ServerTimeout <= 0 {
		opt.ServerTimeout = 45 * time.Second
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.DialContext(ctx, rawURL, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("signaling: dial %s: %w", rawURL, httpError(resp))
		}
		return nil, fmt.Errorf("signaling: dial %s: %w (is `narrowband signal` running there?)", rawURL, err)
	}
	ws.SetReadLimit(int64(opt.MaxMessageBytes))
	c := &Client{ws: ws, id: peerID, room: room, max: opt.MaxMessageBytes,
		in: newInbox(opt.Logger.With("room", room, "peer", peerID)), rdone: make(chan struct{})}
	welcome, err := c.handshake(ctx, key, opt.JoinToken)
	if err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("signaling: join room %s as %s: %w", room, peerID, err)
	}
	c.in.put(welcome)
	c.timeout = opt.ServerTimeout
	ws.SetPingHandler(func(data string) error {
		c.alive()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	go c.readLoop()
	return c, nil
}

func (c *Client) handshake(ctx context.Context, key []byte, token string) (Message, error) {
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// Abort the handshake's blocking reads if ctx ends first.
	stop := context.AfterFunc(ctx, func() { _ = c.ws.SetReadDeadline(time.Now()) })
	defer stop()
	_ = c.ws.SetReadDeadline(deadline)
	_ = c.ws.SetWriteDeadline(deadline)
	ch, err := c.read()
	if err != nil {
		return Message{}, fmt.Errorf("read challenge: %w", err)
	}
	if ch.Type == TypeError {
		return Message{}, serverError(ch)
	}
	if ch.Type != TypeChallenge {
		return Message{}, fmt.Errorf("%w: expected a challenge, got %q", ErrBadMessage, ch.Type)
	}
	nonce, err := decodeNonce(ch.Nonce)
	if err != nil {
		return Message{}, err
	}
	auth := Message{Type: TypeAuth, From: c.id, Proof: Proof(key, nonce, c.room, c.id)}
	if token != "" {
		if auth.Proof, err = GuestProof(token, nonce, c.room, c.id); err != nil {
			return Message{}, err
		}
		auth.Scope = ScopeJoin
	}
	if err := c.ws.WriteJSON(auth); err != nil {
		return Message{}, fmt.Errorf("send proof: %w", err)
	}
	w, err := c.read()
	if err != nil {
		return Message{}, fmt.Errorf("read welcome: %w", err)
	}
	if w.Type == TypeError {
		return Message{}, serverError(w)
	}
	if w.Type != TypeWelcome {
		return Message{}, fmt.Errorf("%w: expected welcome, got %q", ErrBadMessage, w.Type)
	}
	_ = c.ws.SetReadDeadline(time.Time{})
	_ = c.ws.SetWriteDeadline(time.Time{})
	return w, ctx.Err()
}

// httpError describes a refused upgrade. gorilla has already read up to
// 1 KiB of the body, the server's reason, into resp.Body.
func httpError(resp *http.Response) *HTTPError {
	e := &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status}
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		e.Message = strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

func (c *Client) read() (Message, error) {
	kind, b, err := c.ws.ReadMessage()
	if err != nil {
		return Message{}, err
	}
	if kind != websocket.TextMessage {
		return Message{}, fmt.Errorf("%w: binary frame from server", ErrBadMessage)
	}
	return DecodeMessage(b, c.max)
}

func (c *Client) readLoop() {
	defer close(c.rdone)
	for {
		c.alive()
		m, err := c.read()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce):
				c.in.close(fmt.Errorf("%w: server closed the connection: %s", ErrClosed, ce.Text))
			default:
				c.in.close(fmt.Errorf("%w: %v", ErrClosed, err))
			}
			_ = c.ws.Close()
			return
		}
		if !c.in.put(m) {
			_ = c.ws.Close()
			return
		}
	}
}

func (c *Client) alive() { _ = c.ws.SetReadDeadline(time.Now().Add(c.timeout)) }

// ID is the peer ID this client joined as.
func (c *Client) ID() string { return c.id }

// Room is the room this client joined.
func (c *Client) Room() string { return c.room }

// Send relays m to m.To through the server.
func (c *Client) Send(ctx context.Context, m Message) error {
	if err := c.in.Err(); err != nil {
		return err
	}
	if !relayed(m.Type) || m.To == "" {
		return fmt.Errorf("signaling: Send: type %q to %q: only offer, answer, candidate and message with a recipient can be sent", m.Type, m.To)
	}
	m.From = c.id
	c.wmu.Lock()
	defer c.wmu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.ws.SetWriteDeadline(deadline)
	if err := c.ws.WriteJSON(m); err != nil {
		return fmt.Errorf("signaling: send %s to %s: %w", m.Type, m.To, err)
	}
	return nil
}

// Recv returns the next welcome, join, leave, message or error from the
// server. After the connection ends and queued events are read it returns
// an error wrapping ErrClosed.
func (c *Client) Recv(ctx context.Context) (Message, error) { return c.in.recv(ctx) }

// Signals returns the offers, answers and candidates sent by peer.
func (c *Client) Signals(peer string) <-chan Message { return c.in.Signals(peer) }

// Peers returns the other members of the room as last reported, sorted.
func (c *Client) Peers() []string { return c.in.Peers() }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.in.done }

// Err says why the connection ended, nil while it is up.
func (c *Client) Err() error { return c.in.Err() }

// Close leaves the room and closes the connection. It is idempotent.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.in.close(ErrClosed)
		c.wmu.Lock()
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.wmu.Unlock()
		_ = c.ws.Close()
		<-c.rdone
	})
	return nil
}
