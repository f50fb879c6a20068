// The Web Worker a contributing tab computes in: it runs the Go stage peer
// (cmd/nbwasm) compiled to WebAssembly, so the page stays responsive. A
// worker has WebSocket (signaling) but no RTCPeerConnection, so the peer's
// data channels live on the page (contribute.js); messages between the two
// carry transferred ArrayBuffers, not copies.
'use strict';
importScripts('wasm/wasm_exec.js');

let ready = false, pending = null;

// Go → page: peer-connection operations, and reports for the page to show.
// The join waits for the Go side's "ready" (nbJoin exists from then on).
self.nbrtcPost = (msg, transfer) => postMessage({rtc: msg}, transfer || []);
self.nbReport = (r) => {
  if (r.ev === 'ready') {
    ready = true;
    if (pending) { self.nbJoin(pending); pending = null; }
  }
  postMessage({report: r});
};

onmessage = (e) => {
  const d = e.data;
  if (d.rtc) { if (self.nbrtcEvent) self.nbrtcEvent(d.rtc); return; }
  if (d.join) { if (ready) self.nbJoin(d.join); else pending = d.join; return; }
  if (d.leave && self.nbLeave) self.nbLeave();
};

const go = new Go();
WebAssembly.instantiateStreaming(fetch('wasm/narrowband.wasm'), go.importObject)
  .then((res) => go.run(res.instance))
  .catch((err) => postMessage({report: {ev: 'error', text: 'loading the peer (static/wasm/narrowband.wasm): ' + err}}));
