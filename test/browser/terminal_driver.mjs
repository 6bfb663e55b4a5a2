// Drives Debian's chromium (headless) through playwright-core for
// test/t/110_terminal_browser.pl. Reads one command per line on stdin and
// answers one JSON line on stdout:
//   goto <url>                      open the relay's page; {status}
//   open <token>                    type the token into the page and connect; {state}
//   wait_state <state> <ms>         until pgcloudState.state is <state>; {state, code, reason}
//   wait_text <regexp> <ms>         until the terminal shows text matching; {found, text}
//   type <json string>              keystrokes into the terminal; {ok}
//   resize <cols> <rows>            resize the terminal (sends a resize frame); {ok}
//   ws <url> <json protocols>       a raw WebSocket from the page; {opened, code, reason}
//   screenshot <path>               {ok}
//   quit
import { chromium } from 'playwright-core';
import readline from 'node:readline';
import fs from 'node:fs';

const userDataDir = fs.mkdtempSync(process.env.BROWSER_PROFILE_PARENT || '/tmp/pgcloud-chromium-');
const ctx = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  ignoreHTTPSErrors: true,
  viewport: { width: 1100, height: 700 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--ignore-certificate-errors'],
});
const page = ctx.pages()[0] || await ctx.newPage();
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const text = () => page.evaluate(() => {
  const b = window.pgcloudTerm.buffer.active; const lines = [];
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
  return lines.join('\n');
});

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const sp = line.indexOf(' ');
  const cmd = sp < 0 ? line : line.slice(0, sp);
  const arg = sp < 0 ? '' : line.slice(sp + 1);
  try {
    if (cmd === 'goto') {
      const r = await page.goto(arg, { waitUntil: 'load' });
      out({ status: r ? r.status() : null });
    } else if (cmd === 'open') {
      await page.fill('#token', arg);
      await page.click('#open');
      out({ state: await page.evaluate(() => window.pgcloudState.state) });
    } else if (cmd === 'wait_state') {
      const [state, ms] = arg.split(' ');
      try {
        await page.waitForFunction((s) => window.pgcloudState.state === s, state, { timeout: Number(ms) });
      } catch (e) { /* answer with what there is */ }
      out(await page.evaluate(() => window.pgcloudState));
    } else if (cmd === 'wait_text') {
      const i = arg.lastIndexOf(' ');
      const re = new RegExp(arg.slice(0, i)); const deadline = Date.now() + Number(arg.slice(i + 1));
      let t = await text();
      while (!re.test(t) && Date.now() < deadline) { await page.waitForTimeout(100); t = await text(); }
      out({ found: re.test(t), text: t });
    } else if (cmd === 'type') {
      await page.click('#terminal');
      await page.keyboard.type(JSON.parse(arg), { delay: 5 });
      out({ ok: true });
    } else if (cmd === 'resize') {
      const [c, r] = arg.split(' ').map(Number);
      await page.evaluate(([c, r]) => window.pgcloudTerm.resize(c, r), [c, r]);
      out({ ok: true });
    } else if (cmd === 'ws') {
      const i = arg.indexOf(' ');
      const url = arg.slice(0, i); const protocols = JSON.parse(arg.slice(i + 1));
      out(await page.evaluate(([url, protocols]) => new Promise((resolve) => {
        let opened = false; const ws = new WebSocket(url, protocols);
        ws.onopen = () => { opened = true; };
        ws.onclose = (ev) => resolve({ opened, code: ev.code, reason: ev.reason });
        setTimeout(() => resolve({ opened, code: null, timeout: true }), 15000);
      }), [url, protocols]));
    } else if (cmd === 'screenshot') {
      await page.screenshot({ path: arg });
      out({ ok: true });
    } else if (cmd === 'quit') {
      break;
    } else {
      out({ error: 'unknown command ' + cmd });
    }
  } catch (e) {
    out({ error: String(e && e.message || e) });
  }
}
await ctx.close();
fs.rmSync(userDataDir, { recursive: true, force: true });
process.exit(0);
