// Package rtc is the WebRTC implementation of transport.Conn: two peers that
// met through a signaling server (package signaling) open one
// PeerConnection with one ordered, reliable data channel and exchange
// framed messages over it.
//
// Connect runs the offer/answer and trickle-ICE exchange over a
// signaling.Client (or an in-process signaling.Local); the peer whose ID
// sorts first makes the offer, so both sides simply call Connect with each
// other's ID. The data channel is detached into an io.ReadWriteCloser and
// driven by plain loops: Send splits a message into chunks of at most 64 KiB
// (what a browser peer accepts) and waits while the channel's buffered
// amount is above a high-water mark (back-pressure); one reader goroutine
// reassembles chunks into messages (bounded by transport.MaxMessage; hostile
// chunk headers end the link with an error) and queues them for Recv under
// a byte budget, so a slow receiver stops reading and the sender blocks.
//
// Chunk format (version 1; the high nibble of the first byte is the version):
//
//	0x11 | total length (uint32, big endian) | payload   first chunk of a message
//	0x12 | payload                                       continuation
//	0x13                                                 sender closed cleanly (Recv then returns io.EOF)
//
// A new first chunk while a message is incomplete discards the incomplete
// one: that is how a Send abandoned by its context is never delivered.
//
// Each Conn owns its UDP socket with 4 MiB send and receive buffers (the
// kernel default of 208 KiB drops datagrams and stalls SCTP) handed to pion
// through an ICE UDP mux; the sockets pion opens itself (server-reflexive
// via STUN, the TURN client's) get the same buffers through a wrapped
// transport.Net. On Linux the host socket also batches: the datagrams
// pion writes are queued and each run of equal-sized ones to one address
// goes to the kernel as one GSO send (UDP_SEGMENT), and reads take GRO
// batches (UDP_GRO) apart again, so the per-datagram syscall and stack cost
// of pion's 1191-byte SCTP packets is paid per batch (batchConn;
// Config.NoOffload switches it off). The wire is unchanged: peers without
// offload, browsers included, see ordinary datagrams. Config.Loopback restricts candidates to loopback and
// switches mDNS off, for runs on one machine. With ICE servers configured,
// host candidates wait 1 s before nomination so that a direct path through
// two NATs wins over a half-relayed one (pion nominates by the local
// candidate's type alone).
//
// Stats.Candidate is the local type of the selected pair: "host" on
// loopback and also for a direct path through NATs (the local end of that
// pair is the host socket; the remote end is peer-reflexive), "relay" when
// this end sends through TURN, "srflx" when it sends from its STUN-mapped
// socket. RTT comes from the pair's STUN consent checks (every second).
//
// Connect needs the remote to be a member of the room before it offers
// (the server drops messages for absent peers), so it waits for it; an
// answerer that sees a newer offer (the offerer retried) starts over with
// it. Only one Connect per pair of peers may run at a time.
//
// Under js/wasm (conn_js.go) the same Connect and Conn drive peer
// connections that the browser page owns, through a bridge the page's
// JavaScript provides (nbrtcPost / nbrtcEvent; web/static/contribute.js):
// a Web Worker, where the wasm peer computes, has no RTCPeerConnection.
// The signaling messages, chunk format and receive queue are this
// package's own, so a tab and a native peer cannot tell each other apart
// (docs/browser.md).
package rtc
