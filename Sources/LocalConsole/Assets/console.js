// The web console of `markov up`: plain JavaScript, no library (nothing to fetch from the internet; the charts
// are a few lines of canvas). Every request carries the console's token when the URL has one.
'use strict';

const token = new URLSearchParams(location.search).get('token');
const $ = (id) => document.getElementById(id);

function api(path, params = {}) {
  // encodeURIComponent, not URLSearchParams: the server reads `+` as a plus, and a space must arrive as %20.
  const all = { ...params };
  if (token) all.token = token;
  const query = Object.entries(all).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
  return path + (query ? `?${query}` : '');
}

async function call(path, options = {}, params = {}) {
  const response = await fetch(api(path, params), options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

const post = (path, json) => call(path, {
  method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Markov-Console': '1' }, body: JSON.stringify(json),
});

const number = (n) => (n === undefined || n === null) ? '–' : Number(n).toLocaleString('en-US');
function bytes(n) {
  if (n === undefined || n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
const seconds = (s) => (s === null || s === undefined) ? '–' : s < 60 ? `${Math.ceil(s)} s` : `${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s`;

let info = { prefix: '!mark', stateSize: 2 };

// MARK: Chat

function line(kind, who, text) {
  const row = document.createElement('div');
  row.className = `msg ${kind}`;
  if (who) {
    const name = document.createElement('span');
    name.className = 'who';
    name.textContent = who;
    row.appendChild(name);
  }
  row.appendChild(document.createTextNode(text));
  $('chat-log').appendChild(row);
  $('chat-log').scrollTop = $('chat-log').scrollHeight;
  return row;
}

function steps(row, answer) {
  if (!answer.steps || answer.steps.length === 0) return;
  const toggle = document.createElement('button');
  toggle.className = 'steps-toggle';
  toggle.type = 'button';
  toggle.textContent = 'steps';
  const table = document.createElement('table');
  table.className = 'steps';
  table.hidden = true;
  for (const step of answer.steps) {
    const tr = table.insertRow();
    tr.insertCell().textContent = step.token === '' ? '<end>' : step.token;
    tr.insertCell().textContent = `${step.count}/${step.total}`;
    tr.insertCell().textContent = `${(step.probability * 100).toFixed(1)}%`;
  }
  const note = table.insertRow().insertCell();
  note.colSpan = 3;
  note.textContent = `${answer.tries} tries; ${answer.notes}`;
  toggle.addEventListener('click', () => { table.hidden = !table.hidden; });
  row.appendChild(toggle);
  row.after(table);
}

$('chat-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('chat-input');
  const text = input.value;
  if (text.trim() === '') return;
  $('chat-error').textContent = '';
  try {
    const answer = await post('/api/messages', { text });
    input.value = '';
    line('user', 'you', text);
    if (answer.kind === 'reply') {
      const row = line('bot', 'markov', answer.text);
      steps(row, answer);
    }
  } catch (error) {
    $('chat-error').textContent = error.message;
  }
});

// MARK: Learning

function showStats(guild) {
  if (!guild) return;
  $('stat-messages').textContent = number(guild.messages);
  $('stat-states').textContent = number(guild.states);
  $('stat-transitions').textContent = number(guild.transitions);
  if (guild.bytes !== undefined && guild.bytes !== null) {
    $('stat-bytes').textContent = `${guild.bytesSampled ? '≈ ' : ''}${bytes(guild.bytes)} (${Math.round(guild.bytesAge || 0)} s ago)`;
  }
}

let currentImport = null;

function showImport(status) {
  const p = status.progress;
  if (status.queued) { $('import-text').textContent = `${status.name}: queued behind another import`; return; }
  $('import-bar').value = status.fraction;
  const percent = `${Math.floor(status.fraction * 100)} %`;
  if (p.phase === 'failed') {
    $('import-error').textContent = `${status.name}: ${p.error}`;
    $('import-text').textContent = `${percent}: stopped after ${number(p.applied)} of ${number(p.appended)} messages`;
    return;
  }
  const phase = { reading: 'reading', applying: 'learning', done: 'done' }[p.phase] || p.phase;
  $('import-text').textContent = `${percent} ${phase}: ${number(p.applied)} of ${number(p.appended)} messages learnt` +
    `, ${number(Math.round(status.rate))} messages/s, ETA ${p.phase === 'done' ? '0 s' : seconds(status.eta)}`;
}

$('import-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const file = $('import-file').files[0];
  $('import-error').textContent = '';
  if (!file) { $('import-error').textContent = 'choose a file first'; return; }
  $('import-bar').value = 0;
  const request = new XMLHttpRequest();
  request.open('POST', api('/api/imports', { name: file.name }));
  request.setRequestHeader('X-Markov-Console', '1');
  request.upload.onprogress = (e) => {
    if (e.lengthComputable) $('import-text').textContent = `uploading ${Math.floor(e.loaded * 100 / e.total)} %`;
  };
  request.onload = () => {
    let body = null;
    try { body = JSON.parse(request.responseText); } catch (_) { body = null; }
    if (request.status !== 202 || !body) {
      $('import-error').textContent = (body && body.error) || `upload failed (${request.status})`;
      return;
    }
    currentImport = body.id;
    $('import-text').textContent = 'queued';
  };
  request.onerror = () => { $('import-error').textContent = 'the upload was cut off (is markov up still running?)'; };
  request.send(file);
});

// MARK: Inspect

async function inspect(words) {
  $('inspect-error').textContent = '';
  try {
    const state = await call('/api/state', {}, { words });
    $('inspect-input').value = words;
    const described = state.state.map((w) => w === '' ? '∅' : w).join(' ');
    let kind = `“${described}”: ${state.kind} state, ${number(state.total)} transitions`;
    if (state.kind === 'big') kind += state.pending ? ', sampled from an alias table with pending changes' : ', sampled from an up-to-date alias table';
    if (state.kind === 'small') kind += ', sampled by a scan of its successors';
    if (state.kind === 'unknown') kind = `“${described}”: this state was never seen`;
    $('inspect-kind').textContent = kind;
    const result = $('inspect-result');
    result.replaceChildren();
    const top = state.successors.length ? state.successors[0].probability : 1;
    for (const successor of state.successors) {
      const row = document.createElement('div');
      row.className = 'bar';
      const token = document.createElement('button');
      token.type = 'button';
      token.className = 'bar-token' + (successor.token === '' ? ' end' : '');
      token.textContent = successor.token === '' ? '<end>' : successor.token;
      if (successor.token !== '') {
        token.title = 'walk on';
        token.addEventListener('click', () => inspect([...state.state.slice(1), successor.token].join(' ')));
      }
      const fill = document.createElement('div');
      fill.className = 'bar-fill';
      fill.style.width = `${(successor.probability / top) * 100}%`;
      const value = document.createElement('span');
      value.className = 'bar-value';
      value.textContent = `${(successor.probability * 100).toFixed(1)}% (${successor.count})`;
      row.append(token, fill, value);
      result.appendChild(row);
    }
    if (state.more > 0) {
      const more = document.createElement('div');
      more.className = 'bar-value';
      more.textContent = `and ${number(state.more)} more`;
      result.appendChild(more);
    }
  } catch (error) {
    $('inspect-error').textContent = error.message;
  }
}

$('inspect-form').addEventListener('submit', (event) => {
  event.preventDefault();
  inspect($('inspect-input').value);
});

// MARK: System: small line charts on canvas

class Chart {
  constructor(canvas, unit = '') {
    this.canvas = canvas;
    this.unit = unit;
    this.series = new Map();
    this.points = 0;
  }

  push(values) {
    for (const [name, value] of Object.entries(values)) {
      if (!this.series.has(name)) this.series.set(name, new Array(this.points).fill(null));
    }
    for (const [name, data] of this.series) {
      data.push(name in values ? values[name] : null);
      if (data.length > 120) data.shift();
    }
    this.points = Math.min(this.points + 1, 120);
    const first = Object.values(values)[0];
    this.canvas.dataset.points = String(this.points);
    this.canvas.dataset.last = first === undefined || first === null ? '' : String(first);
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const scale = window.devicePixelRatio || 1;
    c.width = c.clientWidth * scale;
    c.height = c.clientHeight * scale;
    const g = c.getContext('2d');
    g.setTransform(scale, 0, 0, scale, 0, 0);
    const w = c.clientWidth, h = c.clientHeight;
    g.clearRect(0, 0, w, h);
    let top = 0;
    for (const data of this.series.values()) for (const v of data) if (v !== null && v > top) top = v;
    const max = top > 0 ? top * 1.15 : 1;
    const colors = ['#5865f2', '#e67e22', '#2e8b57', '#c0392b', '#8e44ad', '#16a085'];
    let i = 0;
    for (const [, data] of this.series) {
      g.strokeStyle = colors[i++ % colors.length];
      g.lineWidth = 1.5;
      g.beginPath();
      let started = false;
      data.forEach((v, x) => {
        if (v === null) { started = false; return; }
        const px = (x / 119) * (w - 2) + 1, py = h - 2 - (v / max) * (h - 16);
        if (started) g.lineTo(px, py); else g.moveTo(px, py);
        started = true;
      });
      g.stroke();
    }
    g.fillStyle = '#6b7385';
    g.font = '11px system-ui, sans-serif';
    const last = [...this.series.values()].map((d) => d[d.length - 1]).filter((v) => v !== null);
    const shown = last.length ? last.reduce((a, b) => a + b, 0) : 0;
    g.fillText(`now ${shown.toFixed(shown < 10 ? 1 : 0)}${this.unit}   max ${top.toFixed(1)}${this.unit}`, 4, 12);
  }
}

const charts = {
  events: new Chart($('chart-events')),
  applied: new Chart($('chart-applied')),
  lag: new Chart($('chart-lag')),
  replies: new Chart($('chart-replies')),
  latency: new Chart($('chart-latency'), ' ms'),
  cpu: new Chart($('chart-cpu'), ' %'),
};

function showSystem(m) {
  charts.events.push({ events: m.eventsPerSecond });
  charts.applied.push({ applied: m.appliedPerSecond });
  const lag = {};
  for (const [partition, value] of Object.entries(m.lag || {})) lag[`p${partition}`] = value;
  charts.lag.push(Object.keys(lag).length ? lag : { none: 0 });
  charts.replies.push({ replies: m.repliesPerSecond });
  charts.latency.push({ p99: m.generationP99Ms === undefined ? null : m.generationP99Ms });
  charts.cpu.push({ cpu: m.cpuPercent });
}

function showDiscord(tick) {
  const m = tick.metrics;
  if (!m.shardsHeld && !tick.rateLimits) return;
  $('discord').hidden = false;
  if (m.shardsHeld) {
    $('shards').textContent = `shards held here: ${m.shardsHeld.join(', ') || 'none'}; ready ${m.shardsReady}; ` +
      `identifies ${m.identifies}, resumes ${m.resumes}`;
  }
  const limits = tick.rateLimits;
  if (!limits) return;
  const body = $('buckets').tBodies[0];
  body.replaceChildren();
  for (const b of limits.buckets) {
    const tr = body.insertRow();
    tr.insertCell().textContent = b.bucket;
    tr.insertCell().textContent = b.major || '–';
    tr.insertCell().textContent = b.remaining === undefined ? '–' : `${b.remaining}/${b.limit ?? '?'}`;
    tr.insertCell().textContent = b.resetsIn === undefined ? '–' : `${b.resetsIn} ms`;
  }
  $('global').textContent = `global: ${limits.globalInWindow}/${limits.globalLimit} in the last second` +
    (limits.blockedFor ? `; blocked for ${limits.blockedFor} ms` : '') + `; 401/403/429 in 10 min: ${limits.badAnswers}/${limits.brakeLimit}`;
}

// MARK: Live updates (Server-Sent Events; reconnects when markov up restarts)

let source = null;

function connect() {
  source = new EventSource(api('/api/events'));
  source.onopen = () => { $('status').textContent = 'live'; $('status').className = 'status live'; };
  source.addEventListener('tick', (event) => {
    const tick = JSON.parse(event.data);
    showStats(tick.guild);
    showSystem(tick.metrics);
    showDiscord(tick);
    const running = tick.imports.find((i) => i.id === currentImport);
    if (running) showImport(running);
  });
  source.onerror = async () => {
    $('status').textContent = 'reconnecting…';
    $('status').className = 'status down';
    if (source.readyState !== EventSource.CLOSED) return;  // EventSource retries by itself
    // Refused: a console restarted off loopback has a new token, which only the URL it printed carries.
    try {
      const response = await fetch(api('/api/info'));
      if (response.status === 401) {
        $('status').textContent = 'open the new URL markov up printed';
        return;
      }
    } catch (_) { /* not up yet */ }
    setTimeout(connect, 1000);
  };
}

async function start() {
  try {
    info = await call('/api/info');
    $('guild').textContent = `guild ${info.guild}${info.discord ? ' · with Discord' : ' · local'}`;
    line('note', '', `Type messages to teach the bot; ${info.prefix} asks it to talk, ${info.prefix} debug shows each word's probability, ${info.prefix} help lists commands.`);
  } catch (error) {
    $('chat-error').textContent = error.message;
  }
  connect();
}

start();
