// A guest's phone as the speaker instrument (scripts/speakers.sh, phase web-L) sees it:
// headless Chromium opens a guest invitation, picks a room and listens until it is stopped,
// printing the page's state every 5 s. Its sound goes wherever PulseAudio sends Chromium's
// (PULSE_SERVER, PULSE_SINK).
//
// Usage: node listen.mjs INVITATION_URL ROOM   (CHROMIUM: default /usr/bin/chromium; DELAY_MS:
// the page's "my delay")

import { chromium } from 'playwright-core';

const [link, room] = process.argv.slice(2);
if (!link || !room) {
  console.error('usage: node listen.mjs INVITATION_URL ROOM');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Playwright mutes headless browsers (a muted Chromium renders into a fake device).
  ignoreDefaultArgs: ['--mute-audio'],
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const stop = async () => {
  await browser.close().catch(() => {});
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
const page = await (await browser.newContext()).newPage();
await page.goto(link);
if (process.env.DELAY_MS) {
  // "my delay", as a guest would set it (kept in the browser).
  await page.evaluate((ms) => localStorage.setItem('tutti.delay_ms', ms), process.env.DELAY_MS);
  await page.reload();
}
await page.selectOption('#listen-zone', room);
await page.click('#listen-play');
for (;;) {
  await page.waitForTimeout(5000);
  const s = await page.evaluate(() => window.tuttiListen.state());
  console.log(JSON.stringify({ status: await page.textContent('#listen-status'), ...s }));
}
