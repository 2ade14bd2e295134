// A guest sings clicks into the party from the guest page (Debian's Chromium, its fake
// microphone playing CLICKS), for scripts/live-latency.sh: the page notes the hub instant each
// click reached it, and the hub says how long its blocks took to arrive.
//
// With EAR=GUEST_LINK2 (headphones mode, no party host needed): a second guest, muted, hears
// the first one's clicks on its "headphones" (this Chromium's sound: PULSE_SERVER's default
// sink); the first one hears only that muted guest.
//
// Usage: node sing-clicks.mjs GUEST_LINK CLICKS.wav SECONDS
// Prints one JSON line: {"clicks_us":[…],"transit_ms":[…],"transit_max_ms":[…],"malformed":N,"sent":N}
// (transit: the hub's figure each second, median and worst).

import { chromium } from 'playwright-core';

const [LINK, CLICKS, SECONDS] = process.argv.slice(2);
if (!SECONDS) throw new Error('usage: node sing-clicks.mjs GUEST_LINK CLICKS.wav SECONDS');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Playwright mutes headless Chromium: the ear's sound is measured.
  ignoreDefaultArgs: ['--mute-audio'],
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${CLICKS}`],
});
try {
  let ear = null;
  if (process.env.EAR) {
    ear = await (await browser.newContext({ viewport: { width: 360, height: 740 } })).newPage();
    await ear.goto(process.env.EAR);
    await ear.check('#sing-mute');
    await ear.check('#sing-hear');
    await ear.click('#sing-start');
    await ear.waitForFunction(() => /^Muted/.test(document.getElementById('sing-status').textContent));
  }
  const page = await (await browser.newContext({ viewport: { width: 360, height: 740 } })).newPage();
  page.setDefaultTimeout(10000);
  await page.goto(LINK);
  // (With no party host, a page sings only into the choir: on headphones.)
  if (ear) await page.check('#sing-hear');
  await page.click('#sing-start');
  await page.waitForFunction(() => /^Singing (into the party|with the others)/.test(document.getElementById('sing-status').textContent));
  await page.waitForTimeout(Number(SECONDS) * 1000);
  const out = await page.evaluate(() => ({
    clicks_us: window.tuttiSing.clicks,
    transit_ms: window.tuttiSing.seconds.map((s) => s.transit_ms),
    transit_max_ms: window.tuttiSing.seconds.map((s) => s.transit_max_ms),
    page_ms: window.tuttiSing.seconds.map((s) => s.page_ms),
    page_max_ms: window.tuttiSing.seconds.map((s) => s.page_max_ms),
    base_latency_ms: window.tuttiSing.ctx ? window.tuttiSing.ctx.baseLatency * 1e3 : null,
    malformed: window.tuttiSing.seconds.at(-1)?.malformed,
    sent: window.tuttiSing.state.sent,
  }));
  if (ear) {
    out.ear = await ear.evaluate(() => ({ ...window.tuttiSing.state.ear, mix_delay_ms: window.tuttiSing.state.mix_delay_ms,
      output_latency_ms: window.tuttiSing.ctx.outputLatency * 1e3, base_latency_ms: window.tuttiSing.ctx.baseLatency * 1e3 }));
    await ear.click('#sing-stop');
  }
  await page.click('#sing-stop');
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
