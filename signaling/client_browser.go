//go:build js && wasm

package signaling

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"syscall/js"
)

// BrowserClient is Client for a program compiled to WebAssembly and run in
// a browser (a page or a Web Worker): the same protocol over the browser's
// own WebSocket, since wasm has no sockets of its own. It implements the
// same methods the WebRTC layer needs (ID, Send, Signals, Peers, Done).
type BrowserClient struct {
	ws   js.Value
	id   string
	room string
	max  int
	in   *inbox

	// What the socket's callbacks hand to the reader goroutine, in order:
	// a callback must not block, so it only queues.
	qmu    sync.Mutex
	queue  []string
	ended  error
	wake   chan struct{}
	funcs  map[string]js.Func
	wmu    sync.Mutex
	once   sync.Once
	closed chan struct{}
}

// DialBrowser connects to rawURL (ws://HOST:PORT/ROOM or wss://…) through
// the browser's WebSocket and joins the room as peerID, proving either the
// secret or, with opt.JoinToken, the room's join token.
func DialBrowser(ctx context.Context, rawURL, peerID, secret string, opt ClientOptions) (*BrowserClient, error) {
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
	c := &BrowserClient{id: peerID, room: room, max: opt.MaxMessageBytes, wake: make(chan struct{}, 1), closed: make(chan struct{}),
		in: newInbox(opt.Logger.With("room", room, "peer", peerID))}
	ctor := js.Global().Get("WebSocket")
	if ctor.IsUndefined() {
		return nil, fmt.Errorf("signaling: this JavaScript environment has no WebSocket")
	}
	c.ws = ctor.New(rawURL)
	c.on("message", func(ev js.Value) {
		d := ev.Get("data")
		if d.Type() != js.TypeString {
			c.push("", fmt.Errorf("%w: binary frame from server", ErrBadMessage))
			return
		}
		c.push(d.String(), nil)
	})
	c.on("close", func(ev js.Value) {
		c.push("", fmt.Errorf("%w: server closed the connection (code %d) %s", ErrClosed, ev.Get("code").Int(), ev.Get("reason").String()))
	})
	c.on("error", func(js.Value) {
		c.push("", fmt.Errorf("%w: websocket to %s failed (is the run's signaling server reachable from this page?)", ErrClosed, rawURL))
	})
	welcome, err := c.handshake(ctx, key, opt.JoinToken)
	if err != nil {
		c.release()
		return nil, fmt.Errorf("signaling: join room %s as %s: %w", room, peerID, err)
	}
	c.in.put(welcome)
	go c.readLoop()
	return c, nil
}

func (c *BrowserClient) on(event string, f func(js.Value)) {
	fn := js.FuncOf(func(this js.Value, args []js.Value) any {
		f(args[0])
		return nil
	})
	if c.funcs == nil {
		c.funcs = map[string]js.Func{}
	}
	c.funcs[event] = fn
	c.ws.Call("addEventListener", event, fn)
}

func (c *BrowserClient) push(text string, err error) {
	c.qmu.Lock()
	if err != nil {
		if c.ended == nil {
			c.ended = err
		}
	} else if c.ended == nil {
		c.queue = append(c.queue, text)
	}
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// next returns the next text frame, or why the socket ended.
func (c *BrowserClient) next(ctx context.Context) (Message, error) {
	for {
		c.qmu.Lock()
		if len(c.queue) > 0 {
			t := c.queue[0]
			c.queue = c.queue[1:]
			c.qmu.Unlock()
			return DecodeMessage([]byte(t), c.max)
		}
		err := c.ended
		c.qmu.Unlock()
		if err != nil {
			return Message{}, err
		}
		select {
		case <-c.wake:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		}
	}
}

func (c *BrowserClient) handshake(ctx context.Context, key []byte, token string) (Message, error) {
	ch, err := c.next(ctx)
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
	auth := Message{Type: TypeAuth, From: c.id}
	if token != "" {
		if auth.Proof, err = GuestProof(token, nonce, c.room, c.id); err != nil {
			return Message{}, err
		}
		auth.Scope = ScopeJoin
	} else {
		auth.Proof = Proof(key, nonce, c.room, c.id)
	}
	if err := c.write(auth); err != nil {
		return Message{}, fmt.Errorf("send proof: %w", err)
	}
	w, err := c.next(ctx)
	if err != nil {
		return Message{}, fmt.Errorf("read welcome: %w", err)
	}
	if w.Type == TypeError {
		return Message{}, serverError(w)
	}
	if w.Type != TypeWelcome {
		return Message{}, fmt.Errorf("%w: expected welcome, got %q", ErrBadMessage, w.Type)
	}
	return w, nil
}

func (c *BrowserClient) write(m Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ws.Get("readyState").Int() != 1 { // OPEN
		return fmt.Errorf("%w: websocket is not open", ErrClosed)
	}
	c.ws.Call("send", string(b))
	return nil
}

func (c *BrowserClient) readLoop() {
	for {
		m, err := c.next(context.Background())
		if err != nil {
			c.in.close(err)
			c.release()
			return
		}
		if !c.in.put(m) {
			c.release()
			return
		}
	}
}

// ID is the peer ID this client joined as.
func (c *BrowserClient) ID() string { return c.id }

// Room is the room this client joined.
func (c *BrowserClient) Room() string { return c.room }

// Send relays m to m.To through the server.
func (c *BrowserClient) Send(ctx context.Context, m Message) error {
	if err := c.in.Err(); err != nil {
		return err
	}
	if !relayed(m.Type) || m.To == "" {
		return fmt.Errorf("signaling: Send: type %q to %q: only offer, answer, candidate and message with a recipient can be sent", m.Type, m.To)
	}
	m.From = c.id
	if err := c.write(m); err != nil {
		return fmt.Errorf("signaling: send %s to %s: %w", m.Type, m.To, err)
	}
	return nil
}

// Signals returns the offers, answers and candidates sent by peer.
func (c *BrowserClient) Signals(peer string) <-chan Message { return c.in.Signals(peer) }

// Peers returns the other members of the room as last reported, sorted.
func (c *BrowserClient) Peers() []string { return c.in.Peers() }

// Done is closed when the connection has ended.
func (c *BrowserClient) Done() <-chan struct{} { return c.in.done }

// Err says why the connection ended, nil while it is up.
func (c *BrowserClient) Err() error { return c.in.Err() }

// Close leaves the room (the server announces the leave) and closes the
// socket. It is idempotent.
func (c *BrowserClient) Close() error {
	c.in.close(ErrClosed)
	c.release()
	return nil
}

func (c *BrowserClient) release() {
	c.once.Do(func() {
		// Removed before release: a late event must not call a released
		// function.
		for ev, f := range c.funcs {
			c.ws.Call("removeEventListener", ev, f)
			f.Release()
		}
		c.ws.Call("close", 1000)
		close(c.closed)
	})
}
