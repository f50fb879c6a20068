// Package signaling is where narrowband peers meet before they talk
// directly: a websocket server with one room per run, a client for it, and an
// optional embedded STUN/TURN server. The WebRTC transport that uses it lives
// in signaling/rtc.
//
// # Flow
//
// A peer dials ws://HOST:PORT/ROOM. The server proves nothing about itself
// (use wss:// behind a TLS proxy for that) but makes every peer prove it
// knows the run's secret without sending it:
//
//	server → peer   {"type":"challenge","nonce":"<base64, 32 random bytes>"}
//	peer → server   {"type":"auth","from":"<peerID>","proof":"<hex>"}
//	server → peer   {"type":"welcome","from":"<peerID>","peers":["a","b"]}
//	                or {"type":"error","code":"auth","error":"authentication failed: wrong secret for room X"} and close
//
// proof = hex(HMAC-SHA256(key, nonce ‖ room ‖ peerID)) where
// key = DeriveKey(secret) (PBKDF2-SHA256, so a captured proof is slow to
// brute-force). The server holds only the derived key, in memory.
//
// After the welcome, the peer may send relay messages to another member of
// the room; the server stamps "from" with the sender's authenticated ID (a
// peer cannot spoof another) and forwards the message unchanged otherwise:
//
//	{"type":"offer","to":"b","data":<any JSON>}      SDP offer (WebRTC)
//	{"type":"answer","to":"b","data":<any JSON>}     SDP answer
//	{"type":"candidate","to":"b","data":<any JSON>}  trickled ICE candidate
//	{"type":"message","to":"b","data":<any JSON>}    anything else (coordinator traffic)
//
// The server tells every member about membership changes:
//
//	{"type":"join","from":"c"}    c authenticated and joined
//	{"type":"leave","from":"c"}   c left or was dropped
//
// and reports problems with {"type":"error","code":"<code>","error":"<text>"}.
// Codes: "auth", "bad-message", "too-large", "rate", "full", "duplicate",
// "overflow" close the socket; "no-peer" (the "to" peer is not in the room)
// does not. Every message is one websocket text frame of at most
// Config.MaxMessageBytes (64 KiB by default) holding exactly one JSON object;
// unknown fields, unknown types, binary frames and floods are answered with an
// error and the socket is closed — other clients are not affected.
//
// # Who gets in
//
// The secret is the only way past the limits on sockets that have not
// authenticated, so nobody without it can keep a peer out: one address
// may hold Config.MaxUnauthPerAddr such sockets (16; more get HTTP 429),
// each for at most Config.AuthTimeout (3 s); together they may fill
// MaxConns − ReservedConns of the MaxConns slots (768 of 1024), and when
// they do, a newcomer from a less busy address pushes out the busiest
// address's oldest socket, so a peer gets its round trip to answer the
// challenge. ReservedConns slots are for members only. Every limit that
// bites logs at Warn, once per Config.LimitLogInterval with counts, not
// once per socket. A refused client gets an HTTP status with the reason
// and Retry-After; DialRetry waits and tries again on those, on a server
// that is not up yet and on a full room, and never on a wrong secret.
//
// # Go side
//
// NewServer returns an http.Handler; Serve and ListenAndServe run it.
// Server.Attach adds an in-process member to a room (a coordinator in the
// same process) that sees joins, leaves and messages like a websocket peer
// and can send to peers; Config.OnMembership is a lighter hook. Dial is the
// client, DialRetry the client that waits for the server. Both Client and Local offer Recv for membership and "message"
// traffic and Signals(peer) for the WebRTC offer/answer/candidate traffic
// from one peer, so signaling/rtc can run on either.
//
// # Guests: join tokens
//
// With Config.JoinTokens a member may prove JoinToken(key, room) instead
// of the secret (auth with "scope": "join"): a guest, such as a browser
// tab that the run's web view lets contribute. The token is bound to its
// room, cannot take a name in Config.ReservedIDs (the coordinator's), and
// is not the secret (no other room, no TURN credentials). Without
// JoinTokens even the right token is refused.
//
// # In a browser
//
// Under js/wasm only the client side is built (message, auth, inbox,
// token): BrowserClient speaks the same protocol over the browser's
// WebSocket. The server, the gorilla client, Local, retries and TURN are
// native only (//go:build !js), which keeps them out of the tab's wasm.
package signaling
