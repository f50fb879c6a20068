// The Contribute control: when the run takes visitors' tabs
// ([web] contribute = true, /api/contribute answers), the page offers the
// tab a stage; on a click it starts the Go peer in a Web Worker
// (nbworker.js) and owns that peer's RTCPeerConnections here, because a
// worker has none. The worker asks for each operation (new, offer, answer,
// remote description, candidate, send, close) and hears back every event;
// data-channel messages cross as transferred ArrayBuffers.
//
// State for tests and scripts is on #contribute's data attributes:
// data-state (offered, loading, joined, computing, done, error),
// data-stage, data-steps, data-sent, data-rate.
'use strict';
(function () {
  const box = document.getElementById('contribute');
  if (!box) return;
  const offerEl = document.getElementById('contrib-offer');
  const button = document.getElementById('contrib-button');
  const progEl = document.getElementById('contrib-progress');
  let offer = null, worker = null;
  const pcs = new Map(); // id → {pc, dc, label, highWater, unacked}

  function setState(s) { box.dataset.state = s; }
  function mb(n) { return (n / 1e6).toFixed(n < 1e7 ? 2 : 0) + ' MB'; }

  function describe(o) {
    let what = 'a spare: it waits, and takes over a stage whose peer leaves';
    if (o.stage >= 0) {
      what = 'stage ' + (o.stage + 1) + ' of ' + o.stages + (o.layers ? ' (' + o.layers + ')' : '');
      if (o.replicas > 1) what = 'replica ' + (o.replica + 1) + ' of ' + o.replicas + ' of ' + what;
    }
    let rate = 'rate: measured once it runs';
    if (o.stage_tokens_per_second > 0 && o.tab_speed > 0) {
      rate = 'expected ~' + Math.round(o.stage_tokens_per_second * o.tab_speed) + ' tokens/s';
    }
    return 'This tab would compute ' + what + '; about ' + mb(o.memory_bytes) + ' of memory; ' + rate + '.';
  }

  fetch('api/contribute', {cache: 'no-store'}).then((r) => (r.status === 200 ? r.json() : null)).then((o) => {
    if (!o) return; // the run does not take contributions: no control
    offer = o;
    offerEl.textContent = describe(o);
    box.hidden = false;
    setState('offered');
  }).catch(() => {});

  button.addEventListener('click', () => {
    if (!offer || worker) return;
    button.disabled = true;
    button.textContent = 'Contributing…';
    setState('loading');
    progEl.textContent = 'loading the peer…';
    worker = new Worker('static/nbworker.js');
    worker.onmessage = (e) => {
      const d = e.data;
      if (d.rtc) onOp(d.rtc);
      else if (d.report) onReport(d.report);
    };
    worker.onerror = (e) => { setState('error'); progEl.textContent = 'worker error: ' + e.message; };
    worker.postMessage({join: {signal: offer.signal, token: offer.token, ice: offer.ice || []}});
  });

  // Closing the tab is a clean leave: the peer connections close now (the
  // run sees the links end at once, not after an ICE timeout) and so does
  // the signaling socket, so a spare takes over.
  window.addEventListener('pagehide', () => {
    if (worker) worker.postMessage({leave: true});
    for (const st of pcs.values()) { try { st.pc.close(); } catch (e) { /* closing anyway */ } }
  });

  let started = 0;
  function onReport(r) {
    switch (r.ev) {
      case 'ready': progEl.textContent = 'joining…'; break;
      case 'joined': setState('joined'); started = performance.now(); progEl.textContent = 'joined as ' + r.id + '; waiting for a stage'; break;
      case 'progress': {
        if (r.stage < 0) break;
        if (box.dataset.state !== 'computing') setState('computing');
        const rate = r.busy > 0 ? r.steps * r.tokens_per_step / r.busy : 0;
        box.dataset.stage = r.stage;
        box.dataset.steps = r.steps;
        box.dataset.sent = r.sent;
        box.dataset.rate = rate.toFixed(1);
        progEl.textContent = 'stage ' + (r.stage + 1) + ': ' + r.steps + ' steps computed, ' + Math.round(rate) +
          ' tokens/s while computing, ' + mb(r.sent) + ' sent, ' + mb(r.received) + ' received';
        break;
      }
      case 'done': setState('done'); button.textContent = 'Thank you'; progEl.textContent += ' — the run is over'; break;
      case 'error': setState('error'); progEl.textContent = 'stopped: ' + r.text; break;
      case 'log': console.log('[peer]', r.text); break;
    }
  }

  function post(id, ev, fields, transfer) {
    const m = Object.assign({id: id, ev: ev}, fields || {});
    worker.postMessage({rtc: m}, transfer || []);
  }
  function fail(id) { return (e) => post(id, 'err', {text: String(e)}); }

  function watch(id, st, dc) {
    st.dc = dc;
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = st.highWater / 2;
    dc.onopen = () => { post(id, 'open'); readPath(id, st); };
    dc.onmessage = (e) => post(id, 'msg', {buf: e.data}, [e.data]);
    dc.onclose = () => post(id, 'closed', {text: 'the data channel closed'});
    // What was posted but held back while the channel's buffer was above
    // the mark is acknowledged once it drains, so the Go side's Send
    // blocks exactly as long as the channel is full.
    dc.onbufferedamountlow = () => ack(id, st);
  }
  function ack(id, st) {
    if (st.unacked > 0) { post(id, 'ack', {n: st.unacked}); st.unacked = 0; }
  }

  // readPath reports the selected candidate pair's kind (named by its less
  // direct end, as the native build does) and RTT, every two seconds.
  function readPath(id, st) {
    if (!pcs.has(id)) return;
    st.pc.getStats().then((stats) => {
      let pair = null;
      stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
      if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
      if (pair) {
        const l = stats.get(pair.localCandidateId), r = stats.get(pair.remoteCandidateId);
        const types = [l && l.candidateType, r && r.candidateType];
        let kind = 'host';
        if (types.includes('relay')) kind = 'relay';
        else if (types.includes('srflx')) kind = 'srflx';
        else if (types.includes('prflx')) kind = 'prflx';
        post(id, 'path', {kind: kind, rtt: pair.currentRoundTripTime || 0});
      }
    }).catch(() => {}).finally(() => setTimeout(() => readPath(id, st), 2000));
  }

  function onOp(m) {
    const id = m.id;
    if (m.op === 'new') {
      const pc = new RTCPeerConnection({iceServers: m.ice || [], iceTransportPolicy: m.relay ? 'relay' : 'all'});
      const st = {pc: pc, dc: null, label: m.label, highWater: m.highWater || (1 << 20), unacked: 0};
      pcs.set(id, st);
      pc.onicecandidate = (e) => {
        if (e.candidate && e.candidate.candidate) post(id, 'cand', {json: JSON.stringify(e.candidate.toJSON())});
      };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === 'failed') post(id, 'closed', {text: 'peer connection failed'});
      };
      pc.ondatachannel = (e) => { if (e.channel.label === st.label) watch(id, st, e.channel); };
      return;
    }
    const st = pcs.get(id);
    if (!st) return;
    const pc = st.pc;
    switch (m.op) {
      case 'offer':
        watch(id, st, pc.createDataChannel(st.label, {ordered: true}));
        pc.createOffer().then((o) => pc.setLocalDescription(o))
          .then(() => post(id, 'sdp', {json: JSON.stringify(pc.localDescription)})).catch(fail(id));
        break;
      case 'answer':
        pc.setRemoteDescription(JSON.parse(m.json)).then(() => pc.createAnswer()).then((a) => pc.setLocalDescription(a))
          .then(() => post(id, 'sdp', {json: JSON.stringify(pc.localDescription)})).catch(fail(id));
        break;
      case 'remote':
        pc.setRemoteDescription(JSON.parse(m.json)).catch(fail(id));
        break;
      case 'cand':
        pc.addIceCandidate(JSON.parse(m.json)).catch((e) => console.warn('candidate', e));
        break;
      case 'send':
        if (!st.dc || st.dc.readyState !== 'open') { post(id, 'ack', {n: m.buf.byteLength}); break; }
        st.dc.send(m.buf);
        st.unacked += m.buf.byteLength;
        if (st.dc.bufferedAmount <= st.highWater / 2) ack(id, st);
        break;
      case 'close': {
        pcs.delete(id);
        const deadline = performance.now() + (m.linger || 1000);
        // What was sent (the clean-close chunk last) leaves first.
        const finish = () => {
          if (st.dc && st.dc.readyState === 'open' && st.dc.bufferedAmount > 0 && performance.now() < deadline) {
            setTimeout(finish, 20);
            return;
          }
          try { if (st.dc) st.dc.close(); pc.close(); } catch (e) { /* already closed */ }
        };
        finish();
        break;
      }
    }
  }
})();
