// narrowband live view. Plain JS, no dependencies: it keeps the run's state
// from the server-sent events and redraws the panels at most ~8 times a
// second, on canvas and with DOM nodes built with textContent (never
// innerHTML, since peer-supplied strings are shown).
'use strict';
(function () {
  const MAX_STEPS = 20000;  // points kept for the loss chart; older ones are thinned
  const MAX_RECENT = 64;    // full step records kept for the link and stage panels
  const MAX_SPANS = 6000;
  const MAX_EVENTS = 300;
  const KINDS = ['forward', 'backward', 'send', 'recv_wait', 'optimizer', 'idle'];
  const KIND_LABEL = { forward: 'forward', backward: 'backward', send: 'send', recv_wait: 'wait (recv)', optimizer: 'optimizer', idle: 'idle' };
  // Async runs: the weight version each forward and backward ran on is a
  // stripe under its bar, one colour per version (cycling: neighbouring
  // versions always differ), and stashes and drops of a version are marks.
  const VERSION_COLORS = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02'];
  const versionColor = (v) => VERSION_COLORS[((v % VERSION_COLORS.length) + VERSION_COLORS.length) % VERSION_COLORS.length];

  // swarm is the server's account of each stage's replicas (web/swarm.go):
  // { shown, replicas: [{stage, peer, state, since, from?, download?,
  // demoted?, candidate?}], gone: [{stage, peer, kind, reason, step}] }.
  const NO_SWARM = { shown: false, replicas: [], gone: [] };
  const S = { run: null, peers: [], status: '', steps: [], recent: [], spans: [], events: [], swarm: NO_SWARM, connected: false };
  const $ = (id) => document.getElementById(id);
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue('--' + name).trim() || '#888';

  // Numbers may arrive as "NaN" / "Infinity" strings (JSON has no NaN).
  const num = (v) => (typeof v === 'number' ? v : v == null ? NaN : Number(v));
  function normStep(r) {
    for (const k of ['loss', 'lr', 'tokens_per_second', 'wall_seconds', 'val_loss', 'grad_norm']) {
      if (k in r) r[k] = num(r[k]);
    }
    if (r.stages) for (const s of r.stages) for (const k of ['busy_seconds', 'idle_seconds', 'net_wait_seconds']) s[k] = num(s[k]);
    return r;
  }
  function normSpan(s) {
    s.start = num(s.start); s.end = num(s.end);
    if (s.version != null) { s.version = num(s.version); if (!Number.isInteger(s.version)) delete s.version; }
    return s;
  }

  // ---- state updates ----
  function thinSteps() {
    const half = S.steps.length >> 1;
    S.steps = S.steps.filter((r, i) => i >= half || i % 2 === 0 || r.val_loss !== undefined);
  }
  function addStep(r) {
    normStep(r);
    const last = S.steps[S.steps.length - 1];
    if (last && r.step <= last.step) {
      // The run went back (restart from a checkpoint): forget the future.
      S.steps = S.steps.filter((x) => x.step < r.step);
      S.recent = S.recent.filter((x) => x.step < r.step);
    }
    const compact = Object.assign({}, r);
    delete compact.stages; delete compact.links;
    S.steps.push(compact);
    if (S.steps.length > MAX_STEPS) thinSteps();
    S.recent.push(r);
    if (S.recent.length > MAX_RECENT) S.recent.splice(0, S.recent.length - MAX_RECENT);
  }
  function applySnapshot(d) {
    S.run = d.run; S.peers = d.peers || []; S.status = d.status || '';
    S.steps = (d.steps || []).map(normStep);
    S.recent = (d.recent || []).map(normStep);
    S.spans = (d.spans || []).map(normSpan);
    S.events = d.events || [];
    S.swarm = d.swarm || NO_SWARM;
  }

  let es = null;
  function connect() {
    if (es) es.close();
    es = new EventSource('events');
    const on = (name, fn) => es.addEventListener(name, (e) => {
      try { fn(JSON.parse(e.data)); } catch (err) { console.error('narrowband: bad ' + name + ' event', err); }
      invalidate();
    });
    on('snapshot', applySnapshot);
    on('step', addStep);
    on('spans', (list) => {
      for (const s of list) S.spans.push(normSpan(s));
      if (S.spans.length > MAX_SPANS) S.spans.splice(0, S.spans.length - MAX_SPANS);
    });
    on('event', (e) => { S.events.push(e); if (S.events.length > MAX_EVENTS) S.events.shift(); });
    on('peers', (p) => { S.peers = p; });
    on('swarm', (w) => { S.swarm = w; });
    on('run', (r) => { S.run = r; });
    on('status', (s) => { S.status = s; });
    es.onopen = () => { S.connected = true; invalidate(); };
    es.onerror = () => { S.connected = false; invalidate(); }; // EventSource reconnects by itself
  }

  // ---- formatting ----
  function si(v, digits) {
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    const d = digits === undefined ? 3 : digits;
    if (a >= 1e9) return +(v / 1e9).toPrecision(d) + 'G';
    if (a >= 1e6) return +(v / 1e6).toPrecision(d) + 'M';
    if (a >= 1e3) return +(v / 1e3).toPrecision(d) + 'k';
    return +v.toPrecision(d) + '';
  }
  // tickLabel formats an axis value with just enough decimals for the tick
  // spacing, so neighbouring ticks never print the same text.
  function tickLabel(v, step, useSI) {
    const units = useSI ? [[1e9, 'G'], [1e6, 'M'], [1e3, 'k'], [1, '']] : [[1, '']];
    for (const [u, suffix] of units) {
      if (Math.abs(v) >= u || u === 1) {
        const d = Math.min(6, Math.max(0, Math.ceil(-Math.log10(step / u) - 1e-9)));
        return +(v / u).toFixed(d) + suffix;
      }
    }
    return String(v);
  }
  function bytes(v) {
    if (!isFinite(v)) return '–';
    if (v >= 1e9) return (v / 1e9).toFixed(2) + ' GB';
    if (v >= 1e6) return (v / 1e6).toFixed(2) + ' MB';
    if (v >= 1e3) return (v / 1e3).toFixed(1) + ' kB';
    return v.toFixed(0) + ' B';
  }
  function bytesRate(v) {
    if (!isFinite(v)) return '–';
    if (v >= 1e6) return (v / 1e6).toFixed(2) + ' MB/s';
    if (v >= 1e3) return (v / 1e3).toFixed(1) + ' kB/s';
    return v.toFixed(0) + ' B/s';
  }
  function duration(sec) {
    if (!isFinite(sec) || sec < 0) return '–';
    sec = Math.round(sec);
    const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
    if (h > 0) return h + 'h ' + String(m).padStart(2, '0') + 'm';
    if (m > 0) return m + 'm ' + String(s).padStart(2, '0') + 's';
    return s + 's';
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // niceTicks returns round tick values covering [lo, hi].
  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    const step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }
  // setupCanvas sizes the backing store to the CSS size times the pixel
  // ratio, so lines stay crisp, and returns a context in CSS pixels.
  function setupCanvas(c, cssHeight) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(100, c.clientWidth);
    c.style.height = cssHeight + 'px';
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(cssHeight * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(cssHeight * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, cssHeight);
    g.font = '11px system-ui, sans-serif';
    return { g, w, h: cssHeight };
  }

  // ---- panels ----
  function renderOverview() {
    const last = S.steps[S.steps.length - 1];
    const run = S.run;
    $('run-name').textContent = run ? run.name || '(unnamed run)' : 'waiting for a run…';
    $('status').textContent = S.status || (run ? (last ? 'training' : 'starting') : 'waiting for the run to start');
    const conn = $('conn');
    conn.className = 'conn ' + (S.connected ? 'live' : 'down');
    conn.title = S.connected ? 'live: connected to the run' : 'disconnected: retrying';
    const total = run ? run.total_steps : 0;
    if (last) {
      $('step-value').textContent = total ? last.step + ' / ' + total : String(last.step);
      $('progress-bar').style.width = total ? Math.min(100, (100 * last.step) / total).toFixed(1) + '%' : '0';
      $('loss-value').textContent = isFinite(last.loss) ? last.loss.toFixed(3) : String(last.loss);
      $('tps-value').textContent = si(last.tokens_per_second);
      $('elapsed-value').textContent = duration(last.wall_seconds);
      // ETA from the recent pace, which reflects the current pipeline.
      const k = Math.max(0, S.steps.length - 21);
      const a = S.steps[k];
      let eta = NaN;
      if (total && last.step >= total) eta = 0;
      else if (total && a && last.step > a.step) eta = ((last.wall_seconds - a.wall_seconds) / (last.step - a.step)) * (total - last.step);
      $('eta-value').textContent = total ? duration(eta) : '–';
      for (let i = S.steps.length - 1; i >= 0; i--) {
        if (S.steps[i].val_loss !== undefined) { $('val-value').textContent = S.steps[i].val_loss.toFixed(3); break; }
      }
    }
    document.body.dataset.step = last ? String(last.step) : '0';
    $('seed').textContent = run ? 'seed ' + run.seed : '';
    $('config').textContent = run && run.config ? run.config : '(not set)';
    $('footer-info').textContent = S.steps.length + ' steps in memory, ' + S.spans.length + ' spans';
  }

  function renderPeers() {
    const tb = $('peers').tBodies[0];
    tb.replaceChildren();
    const rank = (p) => (p.stage >= 0 ? p.stage : 1e9);
    const peers = S.peers.slice().sort((a, b) => rank(a) - rank(b) || String(a.id).localeCompare(String(b.id)));
    for (const p of peers) {
      const tr = el('tr');
      tr.append(el('td', '', p.id), el('td', '', p.stage >= 0 ? String(p.stage) : '–'));
      const st = el('td'); st.append(el('span', 'state ' + (KINDS_STATE.has(p.state) ? p.state : 'unknown'), p.state)); tr.append(st);
      tr.append(el('td', '', p.address || '–'), el('td', '', p.candidate || '–'));
      tb.append(tr);
    }
    if (!peers.length) { const tr = el('tr'); const td = el('td', 'empty', 'no peers yet'); td.colSpan = 5; tr.append(td); tb.append(tr); }
    const active = S.peers.filter((p) => p.state === 'active').length;
    $('peer-count').textContent = S.peers.length ? active + ' active of ' + S.peers.length : '';
  }
  const KINDS_STATE = new Set(['active', 'spare', 'dead', 'unknown']);

  function renderLoss() {
    const c = $('loss-chart');
    const { g, w, h } = setupCanvas(c, 330);
    const L = 56, R = 16, T = 12, B = 40;
    const pts = S.steps.filter((r) => isFinite(r.loss) && isFinite(r.tokens));
    const vals = S.steps.filter((r) => r.val_loss !== undefined && isFinite(r.val_loss));
    c.dataset.points = String(pts.length);
    c.dataset.valPoints = String(vals.length);
    g.strokeStyle = '#c9ced6'; g.strokeRect(L, T, w - L - R, h - T - B);
    if (!pts.length) {
      g.fillStyle = '#6b7280'; g.textAlign = 'center';
      g.fillText('waiting for the first step…', L + (w - L - R) / 2, T + (h - T - B) / 2);
      return;
    }
    // EMA of the train loss; the smoothing window grows with the run so
    // the curve stays readable at any length.
    const win = Math.max(1, Math.min(100, pts.length / 30));
    const beta = 1 - 1 / win;
    const ema = []; let m = pts[0].loss;
    for (const p of pts) { m = beta * m + (1 - beta) * p.loss; ema.push(m); }
    const x0 = Math.min(pts[0].tokens, vals.length ? vals[0].tokens : Infinity);
    let x1 = pts[pts.length - 1].tokens; if (!(x1 > x0)) x1 = x0 + 1;
    // The y range ignores the first few percent of raw points (the initial
    // drop from ln 256) so the interesting part fills the chart.
    const sorted = pts.map((p) => p.loss).sort((a, b) => a - b);
    let y0 = Math.min(sorted[0], ...vals.map((v) => v.val_loss));
    let y1 = Math.max(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.98))], ema[0], ...vals.map((v) => v.val_loss));
    if (pts.length < 10) y1 = sorted[sorted.length - 1];
    const pad = Math.max(0.02, (y1 - y0) * 0.06); y0 -= pad; y1 += pad;
    const X = (v) => L + ((v - x0) / (x1 - x0)) * (w - L - R);
    const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (h - T - B);
    // grid + ticks
    g.fillStyle = '#6b7280'; g.strokeStyle = '#eef0f3'; g.lineWidth = 1;
    g.textAlign = 'right'; g.textBaseline = 'middle';
    const yt = niceTicks(y0, y1, 6);
    for (const v of yt) {
      const y = Math.round(Y(v)) + 0.5; if (y < T || y > h - B) continue;
      g.beginPath(); g.moveTo(L, y); g.lineTo(w - R, y); g.stroke();
      g.fillText(tickLabel(v, yt.length > 1 ? yt[1] - yt[0] : 1, false), L - 6, y);
    }
    g.textAlign = 'center'; g.textBaseline = 'top';
    const xt = niceTicks(x0, x1, Math.max(3, Math.floor((w - L - R) / 90))).filter((v) => Number.isInteger(v));
    for (const v of xt) {
      const x = Math.round(X(v)) + 0.5; if (x < L || x > w - R) continue;
      g.beginPath(); g.moveTo(x, T); g.lineTo(x, h - B); g.stroke();
      g.fillText(tickLabel(v, xt.length > 1 ? xt[1] - xt[0] : 1, true), x, h - B + 5);
    }
    g.fillText('training tokens', L + (w - L - R) / 2, h - 16);
    g.save(); g.translate(13, T + (h - T - B) / 2); g.rotate(-Math.PI / 2); g.textBaseline = 'middle';
    g.fillText('loss (nats/byte)', 0, 0); g.restore();
    // curves, clipped to the plot area
    g.save(); g.beginPath(); g.rect(L, T, w - L - R, h - T - B); g.clip();
    const line = (xs, ys, n, style, width, alpha) => {
      g.globalAlpha = alpha; g.strokeStyle = style; g.lineWidth = width; g.lineJoin = 'round';
      g.beginPath();
      for (let i = 0; i < n; i++) { const x = X(xs(i)), y = Y(ys(i)); if (i === 0) g.moveTo(x, y); else g.lineTo(x, y); }
      g.stroke(); g.globalAlpha = 1;
    };
    line((i) => pts[i].tokens, (i) => pts[i].loss, pts.length, color('train'), 1, 0.3);
    line((i) => pts[i].tokens, (i) => ema[i], pts.length, color('train'), 2, 1);
    if (vals.length) {
      line((i) => vals[i].tokens, (i) => vals[i].val_loss, vals.length, color('val'), 1.5, 0.9);
      g.fillStyle = color('val');
      for (const v of vals) { g.beginPath(); g.arc(X(v.tokens), Y(v.val_loss), 3.5, 0, 2 * Math.PI); g.fill(); }
    }
    g.restore();
    // latest value tag
    const lx = X(pts[pts.length - 1].tokens), ly = Y(ema[ema.length - 1]);
    g.fillStyle = color('train'); g.beginPath(); g.arc(lx, ly, 3, 0, 2 * Math.PI); g.fill();
    g.textAlign = lx < L + 60 ? 'left' : 'right'; g.textBaseline = 'bottom'; g.font = '600 12px system-ui, sans-serif';
    g.fillText(ema[ema.length - 1].toFixed(3), lx < L + 60 ? lx + 4 : Math.min(lx, w - R - 2), ly - 5);
  }

  function renderTimeline() {
    const c = $('timeline');
    const legend = $('timeline-legend');
    if (!legend.childElementCount) {
      for (const k of KINDS) { const s = el('span'); s.append(el('i', 'sw c-' + k), document.createTextNode(KIND_LABEL[k])); legend.append(s); }
    }
    let maxStep = -Infinity;
    for (const s of S.spans) if (s.step > maxStep) maxStep = s.step;
    const shown = S.spans.filter((s) => s.step >= maxStep - 2 && isFinite(s.start) && isFinite(s.end));
    const stages = [...new Set(shown.map((s) => s.stage))].sort((a, b) => a - b);
    const lane = 26, L = 64, R = 16, T = 18, B = 30;
    const { g, w, h } = setupCanvas(c, Math.max(90, T + B + lane * Math.max(1, stages.length)));
    c.dataset.spans = String(shown.length);
    c.dataset.stages = String(stages.length);
    const marks = shown.filter((s) => (s.kind === 'stash' || s.kind === 'drop') && s.version != null);
    const versions = new Set(shown.filter((s) => (s.kind === 'forward' || s.kind === 'backward') && s.version != null).map((s) => s.version));
    c.dataset.versions = String(versions.size);
    c.dataset.stashes = String(marks.filter((s) => s.kind === 'stash').length);
    c.dataset.drops = String(marks.filter((s) => s.kind === 'drop').length);
    if ((versions.size || marks.length) && !legend.dataset.async) {
      legend.dataset.async = '1';
      const v = el('span'); v.append(el('i', 'sw versions'), document.createTextNode('stripe: weight version'));
      const st = el('span'); st.append(el('i', 'mark stash'), document.createTextNode('stash version'));
      const dr = el('span'); dr.append(el('i', 'mark drop'), document.createTextNode('drop version'));
      legend.append(v, st, dr);
    }
    if (!shown.length) {
      g.fillStyle = '#6b7280'; g.textAlign = 'center'; g.textBaseline = 'middle';
      g.fillText('no timeline spans yet', w / 2, h / 2);
      return;
    }
    let t0 = Infinity, t1 = -Infinity;
    for (const s of shown) { if (s.start < t0) t0 = s.start; if (s.end > t1) t1 = s.end; }
    if (!(t1 > t0)) t1 = t0 + 1e-3;
    const X = (t) => L + ((t - t0) / (t1 - t0)) * (w - L - R);
    const laneOf = new Map(stages.map((st, i) => [st, i]));
    const ms = t1 - t0 < 2;
    $('timeline-sub').textContent = 'steps ' + Math.max(0, maxStep - 2) + '–' + maxStep + ', per stage (' + (ms ? ((t1 - t0) * 1000).toFixed(0) + ' ms' : (t1 - t0).toFixed(2) + ' s') + ' shown)';
    // axis
    g.strokeStyle = '#eef0f3'; g.fillStyle = '#6b7280'; g.textAlign = 'center'; g.textBaseline = 'top';
    const tt = niceTicks(0, t1 - t0, Math.max(3, Math.floor((w - L - R) / 90)));
    const tstep = tt.length > 1 ? tt[1] - tt[0] : 1;
    for (const v of tt) {
      const x = Math.round(X(t0 + v)) + 0.5;
      g.beginPath(); g.moveTo(x, T); g.lineTo(x, h - B); g.stroke();
      g.fillText(ms ? tickLabel(v * 1000, tstep * 1000, false) + ' ms' : tickLabel(v, tstep, false) + ' s', x, h - B + 5);
    }
    // step boundaries: where each step's first span starts
    const firstOf = new Map();
    for (const s of shown) if (!firstOf.has(s.step) || s.start < firstOf.get(s.step)) firstOf.set(s.step, s.start);
    g.textAlign = 'left';
    for (const [step, t] of firstOf) {
      const x = Math.round(X(t)) + 0.5;
      g.strokeStyle = '#9aa3b2'; g.setLineDash([3, 3]); g.beginPath(); g.moveTo(x, 4); g.lineTo(x, h - B); g.stroke(); g.setLineDash([]);
      g.fillStyle = '#6b7280'; g.fillText('step ' + step, x + 3, 3);
    }
    g.textBaseline = 'middle';
    for (const st of stages) {
      g.fillStyle = '#1d2330'; g.textAlign = 'right';
      g.fillText('stage ' + st, L - 8, T + laneOf.get(st) * lane + lane / 2);
    }
    g.textAlign = 'center';
    for (const s of shown) {
      if (s.kind === 'stash' || s.kind === 'drop') continue; // marks, drawn on top below
      const x = X(s.start), x2 = X(s.end), y = T + laneOf.get(s.stage) * lane + 3;
      const bw = Math.max(1, x2 - x), bh = lane - 6;
      g.fillStyle = color(KINDS.includes(s.kind) ? s.kind : 'other');
      g.fillRect(x, y, bw, bh);
      const fb = s.kind === 'forward' || s.kind === 'backward';
      if (fb && s.version != null) {
        g.fillStyle = versionColor(s.version);
        g.fillRect(x, y + bh - 5, bw, 5);
      }
      let label = '';
      if (fb && bw > 15) label = (s.kind === 'forward' ? 'F' : 'B') + s.micro + (s.version != null && bw > 40 ? ' v' + s.version : '');
      else if (s.kind === 'optimizer' && s.version != null && bw > 24) label = '→v' + s.version;
      if (label) {
        g.fillStyle = '#fff'; g.font = (bw > 22 ? '11px' : '9px') + ' system-ui, sans-serif'; g.fillText(label, x + bw / 2, y + (bh - 5) / 2);
      }
    }
    // A stash (▼ at the lane's top) copies version v before the optimizer
    // step overwrites it; a drop (△ at its bottom) frees it after its last
    // backward. Between the two, backwards of older micro-batches run on it.
    g.font = '9px system-ui, sans-serif';
    for (const s of marks) {
      const x = X(s.start), y = T + laneOf.get(s.stage) * lane;
      g.fillStyle = versionColor(s.version); g.strokeStyle = '#1d2330'; g.lineWidth = 1;
      g.beginPath();
      if (s.kind === 'stash') { g.moveTo(x - 4, y); g.lineTo(x + 4, y); g.lineTo(x, y + 7); }
      else { g.moveTo(x - 4, y + lane); g.lineTo(x + 4, y + lane); g.lineTo(x, y + lane - 7); }
      g.closePath();
      if (s.kind === 'stash') g.fill();
      g.stroke();
    }
  }

  function renderStages() {
    const box = $('stages');
    const recs = S.recent.filter((r) => r.stages && r.stages.length).slice(-10);
    const agg = new Map();
    for (const r of recs) for (const s of r.stages) {
      const a = agg.get(s.stage) || { busy: 0, idle: 0, net: 0 };
      a.busy += num(s.busy_seconds) || 0; a.idle += num(s.idle_seconds) || 0; a.net += num(s.net_wait_seconds) || 0;
      agg.set(s.stage, a);
    }
    box.dataset.stages = String(agg.size);
    box.replaceChildren();
    if (!agg.size) { box.append(el('p', 'empty', 'no per-stage stats yet')); return; }
    $('stages-sub').textContent = 'mean of the last ' + recs.length + ' step' + (recs.length === 1 ? '' : 's');
    for (const st of [...agg.keys()].sort((a, b) => a - b)) {
      const a = agg.get(st), tot = a.busy + a.idle || 1;
      const net = Math.min(a.net, a.idle);
      const fb = a.busy / tot, fn = net / tot, fi = Math.max(0, (a.idle - net) / tot);
      const row = el('div', 'stage-row'); row.dataset.stage = String(st);
      const bar = el('div', 'bar');
      for (const [f, cls, label] of [[fb, 'c-busy', 'busy'], [fn, 'c-netwait', 'network wait'], [fi, 'c-idle', 'other idle']]) {
        const seg = el('div', cls); seg.style.width = (100 * f).toFixed(2) + '%'; seg.title = label + ' ' + (100 * f).toFixed(1) + '%'; bar.append(seg);
      }
      row.append(el('span', 'name', 'stage ' + st), bar, el('span', 'pct', (100 * fb).toFixed(0) + '% busy · ' + (100 * fn).toFixed(0) + '% net'));
      box.append(row);
    }
  }

  // stepSeconds estimates how long step r took, from the previous record.
  function stepSeconds(r, i, list) {
    for (let j = i - 1; j >= 0; j--) {
      const p = list[j];
      if (p.step < r.step && r.wall_seconds > p.wall_seconds) return (r.wall_seconds - p.wall_seconds) / (r.step - p.step);
    }
    return r.step > 0 && r.wall_seconds > 0 ? r.wall_seconds / r.step : NaN;
  }

  function sparkline(values, style) {
    const c = el('canvas', 'spark');
    c.width = 90 * (window.devicePixelRatio || 1); c.height = 20 * (window.devicePixelRatio || 1);
    const g = c.getContext('2d'); const k = window.devicePixelRatio || 1; g.scale(k, k);
    const fin = values.filter(isFinite);
    if (fin.length < 2) return c;
    const hi = Math.max(...fin) || 1;
    g.strokeStyle = style; g.lineWidth = 1.2; g.beginPath();
    values.forEach((v, i) => { const x = (i / (values.length - 1)) * 88 + 1, y = 19 - (isFinite(v) ? v / hi : 0) * 17; if (i) g.lineTo(x, y); else g.moveTo(x, y); });
    g.stroke();
    return c;
  }

  function renderLinks() {
    const table = $('links'), tb = table.tBodies[0];
    tb.replaceChildren();
    const withLinks = S.recent.filter((r) => r.links && r.links.length);
    const last = withLinks[withLinks.length - 1];
    table.dataset.links = last ? String(last.links.length) : '0';
    if (!last) { const tr = el('tr'); const td = el('td', 'empty', 'no link stats yet'); td.colSpan = 7; tr.append(td); tb.append(tr); return; }
    const dt = stepSeconds(last, S.recent.indexOf(last), S.recent);
    for (const l of last.links) {
      const tr = el('tr');
      const fwd = num(l.bytes_forward) / dt, bwd = num(l.bytes_backward) / dt;
      const fwdTd = el('td', '', bytesRate(fwd)); fwdTd.title = isFinite(fwd) ? (fwd * 8 / 1e6).toFixed(1) + ' Mbit/s, ' + l.bytes_forward + ' bytes this step' : '';
      const bwdTd = el('td', '', bytesRate(bwd)); bwdTd.title = isFinite(bwd) ? (bwd * 8 / 1e6).toFixed(1) + ' Mbit/s, ' + l.bytes_backward + ' bytes this step' : '';
      const ratio = num(l.compression_ratio);
      const rtt = num(l.rtt_ms);
      tr.append(el('td', '', l.from + ' → ' + l.to), fwdTd, bwdTd,
        el('td', '', isFinite(ratio) && ratio > 0 ? '×' + (ratio >= 10 ? ratio.toFixed(0) : ratio.toFixed(1)) : '–'),
        el('td', '', isFinite(rtt) && rtt > 0 ? rtt.toFixed(rtt < 10 ? 1 : 0) + ' ms' : '–'),
        el('td', '', l.candidate || '–'));
      // traffic history of this link over the recent steps, both directions
      const hist = withLinks.map((r) => {
        const m = r.links.find((x) => x.from === l.from && x.to === l.to);
        const d = stepSeconds(r, S.recent.indexOf(r), S.recent);
        return m ? (num(m.bytes_forward) + num(m.bytes_backward)) / d : NaN;
      });
      const td = el('td'); td.append(sparkline(hist, color('send'))); tr.append(td);
      tb.append(tr);
    }
  }

  // ---- swarm: stages as columns of replicas ----
  const REPLICA_STATES = new Set(['joining', 'syncing', 'training', 'leaving']);
  const GONE_LABEL = { replica_left: 'left', replica_dropped: 'dropped', replica_dead: 'dead' };

  // replicaStats sums each replica's stage entries over the recent records:
  // busy and idle seconds, micro-batches (where the runtime counts them),
  // bytes sent on its lane's links, and the seconds of those steps.
  function replicaStats(recs) {
    const out = new Map();
    for (const r of recs) {
      const dt = stepSeconds(r, S.recent.indexOf(r), S.recent);
      for (const s of r.stages) {
        if (!s.peer) continue;
        let a = out.get(s.peer);
        if (!a) { a = { busy: 0, idle: 0, micro: 0, microBusy: 0, microSteps: 0, sent: 0, secs: 0, steps: 0, last: null }; out.set(s.peer, a); }
        const busy = s.busy_seconds || 0;
        a.busy += busy; a.idle += s.idle_seconds || 0; a.steps++;
        if (s.micro_batches != null) { a.micro += num(s.micro_batches); a.microBusy += busy; a.microSteps++; }
        if (isFinite(dt)) { a.sent += num(s.bytes_sent) || 0; a.secs += dt; }
        a.last = s;
      }
    }
    return out;
  }

  // stagePath is the candidate types of the stage's boundary links in the
  // latest record, e.g. "host" or "host / relay", with a line a link.
  function stagePath(stage) {
    const rec = S.recent.filter((r) => r.links && r.links.length).pop();
    if (!rec) return null;
    const ls = rec.links.filter((l) => l.from === stage || l.to === stage);
    if (!ls.length) return null;
    const cands = [...new Set(ls.map((l) => l.candidate || '?'))];
    const lines = ls.map((l) => 'link ' + l.from + '→' + l.to + ': ' + (l.candidate || 'unknown') + (num(l.rtt_ms) > 0 ? ', RTT ' + num(l.rtt_ms).toFixed(1) + ' ms' : ''));
    return { text: cands.join(' / '), title: 'the ICE candidate type of this stage\'s links (per stage boundary: the records do not split a link by replica)\n' + lines.join('\n') };
  }

  function replicaCard(r, a) {
    const state = REPLICA_STATES.has(r.state) ? r.state : 'unknown';
    const card = el('div', 'replica ' + state);
    card.dataset.peer = r.peer; card.dataset.state = state;
    const head = el('div', 'head');
    head.append(el('span', 'peer', r.peer), el('span', 'state ' + state, state));
    card.append(head);
    const line = (label, value, title, cls) => {
      const d = el('div', 'line' + (cls ? ' ' + cls : ''));
      d.append(el('span', 'label', label), el('span', 'value', value));
      if (title) d.title = title;
      card.append(d);
      return d;
    };
    // Stats count only while the replica is in the records: a syncing
    // replica computes nothing yet.
    const fresh = a && a.last && (state === 'training' || state === 'leaving');
    if (fresh) {
      const busyFrac = a.busy / (a.busy + a.idle || 1);
      if (a.microSteps > 0 && a.microBusy > 0) {
        const rate = a.micro / a.microBusy;
        line('compute', rate.toPrecision(3) + ' micro-batches/s', 'micro-batches computed per second of busy time, over the last ' + a.microSteps + ' step' + (a.microSteps === 1 ? '' : 's') + '; busy ' + (100 * busyFrac).toFixed(0) + '% of the step', 'rate');
        line('this step', num(a.last.micro_batches) + ' micro-batch' + (num(a.last.micro_batches) === 1 ? '' : 'es') + ' · busy ' + (100 * busyFrac).toFixed(0) + '%');
      } else {
        line('busy', (100 * busyFrac).toFixed(0) + '% of the step', 'computing (forward, backward, optimizer) over the last ' + a.steps + ' step' + (a.steps === 1 ? '' : 's') + '; the runtime does not count this replica\'s micro-batches', 'rate');
      }
      line('sends', a.secs > 0 ? bytesRate(a.sent / a.secs) : '–', 'activations and gradients it sent on its lane\'s stage links (not the averaging traffic)');
    }
    const path = r.candidate ? { text: r.candidate, title: 'the ICE candidate type of its connection (from the peer list)' } : stagePath(r.stage);
    const pl = line('path', path ? path.text : '–', path ? path.title : 'no candidate type reported');
    pl.dataset.path = path ? path.text : '';
    let note = '';
    if (state === 'joining') note = 'known, not syncing yet';
    else if (state === 'syncing') {
      note = 'downloading state' + (r.from ? ' from ' + r.from : '');
      if (r.download) {
        const d = r.download;
        note = 'state downloaded' + (r.from ? ' from ' + r.from : '') + ': ' + bytes(num(d.bytes)) + ' in ' + num(d.seconds).toFixed(2) + ' s' +
          (num(d.resumed) > 0 ? ' (resumed ' + d.resumed + '×)' : '') + '; waiting for a step boundary';
      }
    } else if (r.since > 0) note = state + ' since step ' + r.since;
    if (note) card.append(el('div', 'note', note));
    if (r.demoted != null) {
      const b = el('span', 'badge slow', 'slow: half the micro-batches');
      if (r.demoted) b.title = r.demoted;
      card.append(b);
    }
    return card;
  }

  function renderSwarm() {
    const panel = $('swarm-panel'), box = $('swarm');
    const w = S.swarm || NO_SWARM;
    panel.hidden = !w.shown;
    if (!w.shown) { box.dataset.columns = '0'; return; }
    const recs = S.recent.filter((r) => r.stages && r.stages.length).slice(-10);
    const stats = replicaStats(recs);
    const last = recs[recs.length - 1];
    const byStage = new Map();
    const col = (st) => { if (!byStage.has(st)) byStage.set(st, { replicas: [], gone: [] }); return byStage.get(st); };
    for (const r of w.replicas) col(r.stage).replicas.push(r);
    for (const g of w.gone) col(g.stage).gone.push(g);
    // A stage no replica holds now still gets its column, from the records.
    if (last) for (const s of last.stages) col(s.stage);
    const stages = [...byStage.keys()].sort((a, b) => (a < 0) - (b < 0) || a - b);
    box.replaceChildren();
    box.dataset.columns = String(stages.length);
    for (const st of stages) {
      const c = byStage.get(st);
      const column = el('div', 'swarm-col'); column.dataset.stage = String(st);
      const counts = {};
      for (const r of c.replicas) counts[r.state] = (counts[r.state] || 0) + 1;
      const h = el('h3', '', st >= 0 ? 'stage ' + st : 'stage ?');
      const parts = [c.replicas.length + ' replica' + (c.replicas.length === 1 ? '' : 's')];
      for (const k of ['joining', 'syncing', 'leaving']) if (counts[k]) parts.push(counts[k] + ' ' + k);
      h.append(el('span', 'sub', parts.join(' · ')));
      column.append(h);
      for (const r of c.replicas) column.append(replicaCard(r, stats.get(r.peer)));
      if (!c.replicas.length) column.append(el('p', 'empty', 'no replica'));
      // The latest departures of the stage, newest first, faded.
      for (const g of c.gone.slice(-3).reverse()) {
        const d = el('div', 'gone ' + (GONE_LABEL[g.kind] || 'left'), g.peer + ' · ' + (GONE_LABEL[g.kind] || g.kind) + ' at step ' + g.step + (g.reason ? ' (' + g.reason + ')' : ''));
        d.dataset.peer = g.peer;
        column.append(d);
      }
      box.append(column);
    }
    const n = w.replicas.length;
    const uniform = stages.length > 0 && stages.every((st) => byStage.get(st).replicas.length === byStage.get(stages[0]).replicas.length);
    $('swarm-sub').textContent = uniform && stages.length ? stages.length + ' stage' + (stages.length === 1 ? '' : 's') + ' × ' + byStage.get(stages[0]).replicas.length + ' replicas' : stages.length + ' stages, ' + n + ' replicas';
    renderAveraging(recs);
  }

  // renderAveraging shows the gradient sum among each stage's replicas:
  // the step's wire bytes over every chain link and direction
  // (replica_bytes), as bytes a step, as a rate, and as the mean a replica
  // sends. Its split among stages is not in the records.
  function renderAveraging(recs) {
    const box = $('swarm-avg');
    box.replaceChildren();
    const withBytes = recs.filter((r) => r.replica_bytes > 0);
    const last = withBytes[withBytes.length - 1];
    box.append(el('span', 'label', 'averaging'));
    if (!last) { box.append(el('span', 'value', 'no gradient-sum traffic reported yet')); box.dataset.bytes = '0'; return; }
    const dt = stepSeconds(last, S.recent.indexOf(last), S.recent);
    const reps = last.stages.filter((s) => s.peer).length || last.stages.length;
    // replica_raw_bytes: what fp32 would have sent ([compression.replicas]
    // codes the sum); the ratio shows the codec at work.
    const raw = num(last.replica_raw_bytes), ratio = raw / last.replica_bytes;
    const coded = raw > 0 ? ' · ' + ratio.toFixed(ratio >= 10 ? 0 : 1) + '× under fp32' : '';
    const v = el('span', 'value', bytes(last.replica_bytes) + ' a step' + coded + ' · ' + bytesRate(last.replica_bytes / dt) + ' · mean ' + bytes(last.replica_bytes / reps) + ' a step per replica');
    v.title = 'the gradient sum among each stage\'s replicas at step ' + last.step + ': ' + last.replica_bytes + ' wire bytes over every link and direction' + (raw > 0 ? ' (' + raw + ' in fp32)' : '') + ', sent by ' + reps + ' replicas (the records do not split it by stage)';
    box.dataset.bytes = String(last.replica_bytes);
    const hist = withBytes.map((r) => r.replica_bytes / stepSeconds(r, S.recent.indexOf(r), S.recent));
    box.append(v, sparkline(hist, color('send')));
  }

  function renderEvents() {
    const ul = $('events');
    ul.replaceChildren();
    if (!S.events.length) { ul.append(el('li', 'empty', 'none yet')); return; }
    for (let i = S.events.length - 1; i >= 0; i--) {
      const e = S.events[i];
      const li = el('li');
      li.append(el('span', 'k ' + String(e.kind).replace(/[^a-z_]/gi, ''), e.kind), document.createTextNode(' step ' + e.step + ' · ' + duration(num(e.wall_seconds)) + ' '));
      if (e.detail) li.append(el('span', 'd', JSON.stringify(e.detail)));
      ul.append(li);
    }
  }

  let pending = false;
  // invalidate coalesces redraws: a burst of events costs one render.
  // setTimeout and not requestAnimationFrame, so a background tab still
  // keeps its state current (rAF does not run there).
  function invalidate() {
    if (pending) return;
    pending = true;
    setTimeout(render, 120);
  }
  function render() {
    pending = false;
    for (const f of [renderOverview, renderPeers, renderLoss, renderSwarm, renderTimeline, renderStages, renderLinks, renderEvents]) {
      try { f(); } catch (err) { console.error('narrowband: render ' + f.name, err); }
    }
  }
  window.addEventListener('resize', invalidate);
  // Close the stream when the page goes away (or into the back/forward
  // cache) so the server frees the observer at once; reopen on return,
  // which starts with a fresh snapshot.
  window.addEventListener('pagehide', () => { if (es) { es.close(); es = null; } S.connected = false; });
  window.addEventListener('pageshow', (e) => { if (e.persisted) connect(); });
  window.narrowband = { state: S, render };
  render();
  connect();
})();
