// Client side of bench/terminal.sh (node --experimental-websocket): holds
// many relay sessions, measures the relay's memory per session, streaming
// throughput, and keystroke round trips through relay+sshd against a direct
// `ssh -tt` to the same sshd. Prints one JSON object.
import fs from 'node:fs';
import { spawn } from 'node:child_process';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const tokens = fs.readFileSync(cfg.tokens, 'utf8').trim().split('\n');
let next = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${cfg.relay_pid}/status`, 'utf8'))[1]);

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(cfg.url, ['pgcloud.terminal', 'pgcloud.token.' + tokens[next++]]);
    ws.binaryType = 'arraybuffer';
    const s = { ws, bytes: 0, buf: '', onData: null, closed: false };
    let ready = false;
    ws.onmessage = (ev) => {
      const b = Buffer.from(ev.data);
      s.bytes += b.length;
      if (s.onData) s.onData(b);
      if (!ready) { ready = true; resolve(s); }
    };
    ws.onclose = (ev) => { s.closed = true; if (!ready) reject(new Error('closed ' + ev.code + ' ' + ev.reason)); };
    ws.onerror = () => {};
    setTimeout(() => { if (!ready) reject(new Error('timeout')); }, 30000);
  });
}

function pct(a, p) { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; }

// Keystroke round trip: write one byte, wait for its echo (the PTY echoes it; cat is running).
async function rttLoop(send, waitFor, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const ch = String.fromCharCode(97 + (i % 26));
    const t0 = process.hrtime.bigint();
    const p = waitFor(ch);
    send(ch);
    await p;
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
    await sleep(5);
  }
  return { p50_ms: +pct(out, 0.5).toFixed(3), p99_ms: +pct(out, 0.99).toFixed(3), n };
}

function relayRtt(s, n) {
  const send = (ch) => s.ws.send('0' + ch);
  const waitFor = (ch) => new Promise((resolve) => { s.onData = (b) => { if (b.includes(ch)) { s.onData = null; resolve(); } }; });
  return rttLoop(send, waitFor, n);
}

async function directRtt(n) {
  const p = spawn('ssh', [...cfg.ssh_args, 'exec cat'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let onData = null;
  p.stdout.on('data', (b) => { if (onData) onData(b); });
  await sleep(1500);
  const send = (ch) => p.stdin.write(ch);
  const waitFor = (ch) => new Promise((resolve) => { onData = (b) => { if (b.includes(ch)) { onData = null; resolve(); } }; });
  const r = await rttLoop(send, waitFor, n);
  p.kill();
  return r;
}

const result = { idle_sessions: cfg.idle, streaming_sessions: cfg.streaming };
const rss0 = rss();
result.relay_rss_kb_empty = rss0;

// 1. idle sessions, opened in batches
const idle = [];
const tOpen = Date.now();
let failed = 0;
for (let i = 0; i < cfg.idle; i += 20) {
  const batch = await Promise.allSettled(Array.from({ length: Math.min(20, cfg.idle - i) }, () => open()));
  for (const b of batch) { if (b.status === 'fulfilled') idle.push(b.value); else failed++; }
}
result.idle_opened = idle.length;
result.idle_failed = failed;
result.open_seconds = (Date.now() - tOpen) / 1000;
await sleep(2000);
const rssIdle = rss();
result.relay_rss_kb_idle = rssIdle;
result.relay_kb_per_idle_session = +((rssIdle - rss0) / Math.max(1, idle.length)).toFixed(1);

// 2. keystroke round trips with the idle sessions held
const probe = await open();
probe.ws.send('0exec cat\r');
await sleep(1000);
result.rtt_relay_idle_load = await relayRtt(probe, cfg.rtt_n);
result.rtt_direct_ssh_idle_load = await directRtt(cfg.rtt_n);

// 3. streaming sessions
const streams = [];
for (let i = 0; i < cfg.streaming; i++) streams.push(await open());
for (const s of streams) s.ws.send('0exec yes pgcloud-terminal-benchmark-streaming-line\r');
await sleep(1000);
const b0 = streams.map((s) => s.bytes);
const tStream = Date.now();
const rttStreamP = relayRtt(probe, Math.floor(cfg.rtt_n / 3));
const directStreamP = rttStreamP.then(() => directRtt(Math.floor(cfg.rtt_n / 3)));
await sleep(cfg.stream_seconds * 1000);
const secs = (Date.now() - tStream) / 1000;
const mb = streams.reduce((acc, s, i) => acc + (s.bytes - b0[i]), 0) / 1e6;
result.relay_rss_kb_streaming = rss();
result.streaming_total_mb_per_s = +(mb / secs).toFixed(2);
result.streaming_per_session_mb_per_s = +(mb / secs / streams.length).toFixed(3);
result.rtt_relay_streaming_load = await rttStreamP;
result.rtt_direct_ssh_streaming_load = await directStreamP;
result.sessions_held_at_peak = idle.length + 1 + streams.length;

for (const s of [...idle, probe, ...streams]) s.ws.close();
await sleep(2000);
console.log(JSON.stringify(result));
process.exit(0);
