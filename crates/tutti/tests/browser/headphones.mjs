// Two guests on headphones, singing together (no party host: only the hub's choir), in
// Debian's Chromium with a fake microphone playing VOICE. Guest A sings; guest B is muted.
// Each hears the others' mix and not itself: B hears A's voice, A hears silence. Run by the
// e2e test `guests_on_headphones_hear_each_other_and_not_themselves`.
//
// Environment: HUB, INVITE_A and INVITE_B (two invitations' paths), VOICE, SHOT (a
// screenshot's path). Prints one JSON line of figures last; exits non-zero when a control does
// nothing.

import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const [HUB, INVITE_A, INVITE_B, VOICE] = ['HUB', 'INVITE_A', 'INVITE_B', 'VOICE'].map(env);
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
  const guest = async (invite, muted) => {
    const page = await (await browser.newContext({ viewport: { width: 360, height: 740 } })).newPage();
    page.setDefaultTimeout(10000);
    await page.goto(HUB + invite);
    check(page.url() === HUB + '/guest', `a guest: ${page.url()}`);
    if (muted) await page.check('#sing-mute');
    await page.check('#sing-hear');
    await page.click('#sing-start');
    await until('the page sings with the others', async () =>
      /^(Singing with the others on headphones|Muted)/.test(await page.textContent('#sing-status')));
    return page;
  };
  const state = (page) => page.evaluate(() => ({ ...window.tuttiSing.state }));
  const a = await guest(INVITE_A, false);
  const b = await guest(INVITE_B, true);
  await until('both see a choir of two', async () => (await state(a)).voices === 2 && (await state(b)).voices === 2);
  // Two full seconds of each hearing the other.
  await a.waitForTimeout(3000);
  const [sa, sb] = [await state(a), await state(b)];
  check(sb.heard_peak > 0.1, `B (muted) hears A's voice: ${JSON.stringify(sb)}`);
  check(sa.heard_peak < 0.001, `A hears no one (B is muted), and not itself: ${JSON.stringify(sa)}`);
  check(sa.ear && sa.ear.played > 48000 && sb.ear && sb.ear.played > 48000, `both ears play: ${JSON.stringify([sa.ear, sb.ear])}`);
  check(/hearing 1 other, mixed [\d.]+ ms after they sang$/.test(await b.textContent('#sing-status')), 'the page says whom it hears');
  await b.screenshot({ path: process.env.SHOT || '/tmp/tutti-guest-headphones.png', fullPage: true });
  // B unmutes: now A hears B (the same voice file) too.
  await b.uncheck('#sing-mute');
  await until('A hears B once B unmutes', async () => (await state(a)).heard_peak > 0.1, 5000);
  // A takes its headphones off: its page stops playing the mix; B still hears A.
  await a.uncheck('#sing-hear');
  await until("A's ear stops", async () => (await state(a)).ear === null);
  await a.waitForTimeout(1500);
  check((await state(b)).heard_peak > 0.1, 'B still hears A');
  const figures = {
    mix_delay_ms: sb.mix_delay_ms,
    transit_ms: [sa.transit_ms, sb.transit_ms],
    ear_buffered_ms: sb.ear.buffered_ms,
    ear_underruns: sb.ear.underruns,
    late_frames: [sa.late_frames, sb.late_frames],
  };
  await a.click('#sing-stop');
  await b.click('#sing-stop');
  console.log(JSON.stringify(figures));
} finally {
  await browser.close();
}
