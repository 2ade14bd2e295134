// A guest sings into the party from the guest page, in Debian's Chromium with a fake
// microphone playing VOICE (a WAV file). Run by the e2e test `a_guest_sings_into_the_party_from_a_browser`.
//
// Environment: HUB (http://127.0.0.1:PORT), INVITE (the invitation's path), VOICE, SECONDS
// (how long to sing). Prints one JSON line (the page's state) last; exits non-zero when a
// control does nothing.

import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const [HUB, INVITE, VOICE] = ['HUB', 'INVITE', 'VOICE'].map(env);
const SECONDS = Number(process.env.SECONDS || 4);
const check = (ok, what) => {
  if (!ok) throw new Error(`failed: ${what}`);
};
async function until(what, f, ms = 10000) {
  const t = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - t > ms) throw new Error(`within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${VOICE}`],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 360, height: 740 } })).newPage();
  page.setDefaultTimeout(10000);
  await page.goto(HUB + INVITE);
  check(page.url() === HUB + '/guest', `a guest: ${page.url()}`);
  await page.click('#sing-start');
  await until('the page sings into the party', async () =>
    /^Singing into the party/.test(await page.textContent('#sing-status')));
  await page.waitForTimeout(SECONDS * 1000);
  const state = await page.evaluate(() => ({ ...window.tuttiSing.state }));
  check(state.sent > 48000 * (SECONDS - 1), `it sent its voice: ${JSON.stringify(state)}`);
  check(state.peak > 0.05, `the level meter moves: ${state.peak}`);
  check(typeof state.transit_ms === 'number' && state.transit_ms >= 0 && state.transit_ms < 50,
    `the hub counts its blocks from the page (the way from the page, ms): ${JSON.stringify(state)}`);
  check(/ms to the hub\)$/.test(await page.textContent('#sing-status')), 'the page shows the way to the hub');
  check(await page.locator('#sing-start').isDisabled(), 'sing is pressed');
  await page.check('#sing-mute');
  await until('mute says so', async () => /^Muted/.test(await page.textContent('#sing-status')));
  const before = await page.evaluate(() => window.tuttiSing.state.sent);
  await page.waitForTimeout(1000);
  check((await page.evaluate(() => window.tuttiSing.state.sent)) > before, 'muted, it keeps its place (sends silence)');
  await page.screenshot({ path: process.env.SHOT || '/tmp/tutti-guest-sing.png', fullPage: true });
  await page.click('#sing-stop');
  await until('stop stops', async () => /^Stopped: you stopped/.test(await page.textContent('#sing-status')));
  console.log(JSON.stringify(state));
} finally {
  await browser.close();
}
