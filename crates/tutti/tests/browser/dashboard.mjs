// The hub's dashboard driven as a person would, in Debian's Chromium (playwright-core, no
// downloaded browser). Run by the e2e test `the_dashboard_drives_real_players_as_a_person_would`,
// which starts a hub, a source and two WAV players, and checks the players' output afterwards.
//
// Environment: HUB (http://127.0.0.1:PORT), ADMIN and READ (the hub's tokens), LEFT and RIGHT
// (two players' ids: RIGHT already plays in the room "living", LEFT is in no room), SOURCE (the
// source's address), JUKEBOX (a playlist's address: 1-low.wav and 2-high.wav, to no room), SHOTS (a folder for screenshots), TUTTI_BIN and PAIRING (to pair a new node
// from the page's link), CHROMIUM (default /usr/bin/chromium).
//
// Prints one JSON line of figures last; exits non-zero (with what failed) when a control does
// nothing.

import { chromium } from 'playwright-core';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const HUB = env('HUB');
const [ADMIN, READ, LEFT, RIGHT, SOURCE, JUKEBOX, SHOTS] = ['ADMIN', 'READ', 'LEFT', 'RIGHT', 'SOURCE', 'JUKEBOX', 'SHOTS'].map(env);
mkdirSync(SHOTS, { recursive: true });

const step = (what) => console.log(`-- ${what}`);
function check(ok, what) {
  if (!ok) throw new Error(`failed: ${what}`);
}
async function api(path) {
  const r = await fetch(HUB + path, { headers: { Authorization: `Bearer ${ADMIN}` } });
  check(r.ok, `GET ${path}: ${r.status}`);
  return r.json();
}
/** Polls `f` until it returns something truthy (or fails saying `what`). */
async function until(what, f, ms = 10000) {
  const t = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - t > ms) throw new Error(`within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
const node = async (id) => api(`/api/nodes/${encodeURIComponent(id)}`);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p99 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.99) - 1)];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const figures = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);

  step('the hub sends a stranger to the login page, and a wrong token is refused in words');
  await page.goto(HUB + '/');
  check(page.url().endsWith('/login'), `redirected to /login, at ${page.url()}`);
  await page.fill('#token', 'not-a-token');
  await page.click('#login');
  check((await page.textContent('#login-error')).includes('Unknown token'), 'the wrong token is named');

  step('the admin token logs in; both players appear, playing');
  const t0 = Date.now();
  await page.fill('#token', ADMIN);
  await page.click('#login');
  const left = page.locator(`.card.node[data-id="${LEFT}"]`);
  const right = page.locator(`.card.node[data-id="${RIGHT}"]`);
  await left.waitFor();
  await right.waitFor();
  figures.login_to_cards_ms = Date.now() - t0;
  await until('the right player shows it plays', async () => (await right.locator('.status').textContent()).startsWith('playing'));
  check(!(await left.locator('.status').textContent()).includes('room'), 'the left player is in no room');
  await until("the right player's link quality and arrival jitter show", async () =>
    /^(good|fair|poor)$/.test(await right.locator('dd.link').textContent()) &&
    /^\d+\.\d\d ms$/.test(await right.locator('dd.jitter').textContent()));
  await page.screenshot({ path: `${SHOTS}/dashboard.png`, fullPage: true });
  await right.screenshot({ path: `${SHOTS}/node-card.png` });

  step('a new room, given the stream from its card');
  await page.click('#tab-rooms');
  await page.fill('.new-zone', 'kitchen');
  await page.click('.create-zone');
  const kitchen = page.locator('.card.zone[data-zone="kitchen"]');
  await kitchen.waitFor();
  await kitchen.locator('.zone-source').selectOption(SOURCE);
  await until('the hub routes the kitchen to the source', async () =>
    (await api('/api/zones')).some((z) => z.name === 'kitchen' && z.source === SOURCE));
  await until('the card shows the stream', async () => (await kitchen.locator('.zone-source').inputValue()) === SOURCE);

  step("an invalid latency is refused next to its field, in the API's words");
  await kitchen.locator('.zone-latency').fill('3');
  await kitchen.locator('.zone-latency').press('Enter');
  await kitchen.locator('.zone-latency').blur();
  const latencyError = await until('the error shows', async () => {
    const e = kitchen.locator('.error');
    return (await e.count()) > 0 && (await e.first().textContent());
  }).catch(async (e) => { throw new Error(`${e.message}: ${await kitchen.innerHTML()}`); });
  check(latencyError.includes('outside 10–5000 ms'), `the API's message: ${latencyError}`);

  step('the left player moves to the kitchen and plays there');
  await page.click('#tab-speakers');
  await left.locator('select.zone').selectOption('kitchen');
  await until('the hub has the left player in the kitchen', async () => (await node(LEFT)).settings.zone === 'kitchen');
  await until('its card says it plays', async () => (await left.locator('.status').textContent()).startsWith('playing'), 15000);
  check((await left.locator('.zone-name').textContent()) === 'kitchen', 'the card names its room');
  // A second of full volume in its output before the change.
  await page.waitForTimeout(1500);

  step('its volume slider is dragged down');
  const slider = left.locator('input.volume');
  const box = await slider.boundingBox();
  await page.mouse.move(box.x + box.width - 4, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  const volume = await until('the hub has a new volume', async () => {
    const v = (await node(LEFT)).settings.volume;
    return v < 90 ? v : 0;
  });
  check(volume > 5 && volume < 60, `dragged to about 30 %: ${volume}`);
  await until('the card shows it', async () => (await left.locator('.volume-value').textContent()) === `${Math.round(volume)}%`);
  figures.volume = volume;
  await page.waitForTimeout(1500);

  step('mute, then the round trip click → hub → card, ten times');
  const mute = left.locator('button.mute');
  await mute.click();
  await until('the hub has it muted', async () => (await node(LEFT)).settings.mute === true);
  await until('the button offers unmute', async () => (await mute.textContent()) === 'unmute');
  // Timed in the page: from the click to the card showing the hub's answer (a mutation
  // observer sees the button's new text), with no polling in between.
  const trips = await page.evaluate(async (sel) => {
    const out = [];
    for (let i = 0; i < 10; i++) {
      const before = document.querySelector(sel).textContent;
      const t = performance.now();
      await new Promise((resolve, reject) => {
        const o = new MutationObserver(() => {
          const now = document.querySelector(sel);
          if (now && now.textContent !== before) {
            o.disconnect();
            resolve();
          }
        });
        o.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
        setTimeout(() => reject(new Error(`no answer to click ${i} within 2 s`)), 2000);
        document.querySelector(sel).click();
      });
      out.push(performance.now() - t);
    }
    return out;
  }, `.card.node[data-id="${LEFT}"] button.mute`);
  check((await node(LEFT)).settings.mute === true, 'ten toggles end muted');
  figures.round_trip_ms = { median: median(trips), p99: p99(trips), n: trips.length };

  step('the delay knob steps by half a millisecond');
  await left.locator('.delay-up').click();
  await until('the hub has +0.5 ms', async () => (await node(LEFT)).settings.delay_ms === 0.5);
  await until('the knob shows it', async () => (await left.locator('input.delay').inputValue()) === '0.5');
  await left.locator('.delay-down').click();
  await until('and back to 0', async () => (await node(LEFT)).settings.delay_ms === 0);

  step('resync from its card: the player starts over on its stream, and the card counts it');
  const resyncs = async () => (await node(LEFT)).state?.resyncs ?? 0;
  const resyncedBefore = await resyncs();
  await left.locator('button.resync').click();
  await until('the player resynced', async () => (await resyncs()) > resyncedBefore);
  await until('its card counts it', async () => Number(await left.locator('dd.resyncs').textContent()) > resyncedBefore);
  check(/^\d+\.\d ms$/.test(await left.locator('dd.buffer').textContent()), 'the card shows its buffer in ms');
  step('identify from its card: the player chimes over its mute (the test finds the chime in its output)');
  await left.locator('button.identify').click();
  await page.waitForTimeout(1000);
  step('test tone from its card: the player plays 2 s of 1 kHz over its mute (the test finds it in its output)');
  await left.locator('button.test-tone').click();
  await page.waitForTimeout(2600);

  step('pairing: the page shows a one-time link and its QR code; a new node pairs with it');
  await page.click('#tab-pairing');
  await page.click('button.pair');
  await page.locator('.qr svg').waitFor();
  const how = await page.textContent('pre.how');
  const link = how.match(/'(tutti:\/\/[^']+)'/)?.[1];
  check(link, `a pairing link on the page: ${how}`);
  const paired = spawnSync(env('TUTTI_BIN'), ['pair', link, '--name', 'attic', '--pairing', env('PAIRING')], {
    env: { ...process.env, TUTTI_MDNS: 'off' }, encoding: 'utf8', timeout: 15000,
  });
  check(paired.status === 0, `tutti pair with the page's link: ${paired.stdout}${paired.stderr}`);
  const attic = page.locator('li.paired-node', { hasText: 'attic' });
  await attic.waitFor();
  await page.screenshot({ path: `${SHOTS}/pairing.png`, fullPage: true });
  await attic.locator('button.revoke').click();
  await until('the revoked node leaves the list', async () => (await attic.count()) === 0);
  check(!(await api('/api/pairing')).nodes.some((n) => n.name === 'attic'), 'the hub revoked it');

  step('the health panel lists every player, with its last hour');
  await page.click('#tab-health');
  await until('two rows', async () => (await page.locator('.sync tbody tr').count()) === 2);
  for (const id of [LEFT, RIGHT]) {
    for (const metric of ['sync', 'arrivals']) {
      const row = page.locator(`.heatmap tr[data-id="${id}"][data-metric="${metric}"]`);
      await until(`${id}'s hour of ${metric} in the health map, this minute coloured`, async () =>
        (await row.locator('td.cell').count()) === 60 && (await row.locator('td.cell').last().getAttribute('class')) !== 'cell none');
    }
  }
  const discovery = await page.locator('.hub dd.discovery').textContent();
  check(discovery === 'off', `the hub's mDNS is off in this test, and the card says so: ${discovery}`);
  const keys = await page.locator('.hub dd.keys').textContent();
  check(/^(steady|rotating), made (just now|\d+ (s|min) ago)$/.test(keys), `the stream keys' age: ${keys}`);
  await page.screenshot({ path: `${SHOTS}/health.png`, fullPage: true });

  step('a phone-sized screen: no sideways scrolling');
  const phone = await browser.newContext({ viewport: { width: 360, height: 740 }, storageState: await context.storageState() });
  const small = await phone.newPage();
  await small.goto(HUB + '/');
  await small.locator(`.card.node[data-id="${LEFT}"]`).waitFor();
  const wide = await small.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= 360, `the page fits 360 px: ${wide}`);
  await small.screenshot({ path: `${SHOTS}/dashboard-phone.png`, fullPage: true });
  await phone.close();

  step('a guest: the QR code\u2019s link opened on a phone, once; sent away from the dashboard');
  await page.click('#tab-guests');
  await page.click('.invite-guest');
  const guestLink = await page.locator('a.guest-link').getAttribute('href');
  check(/\/guest\?invite=[0-9a-f]{32}$/.test(guestLink), `an invitation link: ${guestLink}`);
  check((await page.locator('.invite .qr svg').count()) === 1, 'its QR code shows');
  // Opened on this hub's own address (the link names the LAN's).
  const invitePath = guestLink.slice(guestLink.indexOf('/guest'));
  const guestPhone = await browser.newContext({ viewport: { width: 360, height: 740 } });
  const guestPage = await guestPhone.newPage();
  await guestPage.goto(HUB + invitePath);
  check(guestPage.url() === HUB + '/guest', `the invitation leads to the guest page: ${guestPage.url()}`);
  const welcome = await guestPage.textContent('#guest-name');
  check(/^You are Guest \d+ on /.test(welcome), `the guest is named: ${welcome}`);
  check((await guestPage.locator('li.stream').count()) >= 1, 'the guest sees what plays');
  check(await guestPage.evaluate(() => document.documentElement.scrollWidth) <= 360, 'the guest page fits 360 px');
  await guestPage.screenshot({ path: `${SHOTS}/guest-phone.png`, fullPage: true });
  await guestPage.fill('#name', 'Anna');
  await guestPage.click('#rename');
  await guestPage.waitForURL(HUB + '/guest');
  check((await guestPage.textContent('#guest-name')).startsWith('You are Anna on '), 'the guest named itself');
  const guestRow = page.locator('li.guest');
  await until('the dashboard lists the guest by its name', async () =>
    (await guestRow.count()) === 1 && (await guestRow.textContent()).includes('Anna'));
  const other = await browser.newContext({ viewport: { width: 360, height: 740 } });
  const again = await other.newPage();
  await again.goto(HUB + invitePath);
  check((await again.textContent('#guest-error')).includes('used already'), 'a used invitation is refused in words');
  await other.close();

  step('the guest listens to the living room on the phone, in time with it; then apart; then stops');
  await guestPage.selectOption('#listen-zone', 'living');
  await guestPage.click('#listen-play');
  const listening = () => guestPage.evaluate(() => window.tuttiListen.state());
  await until('the phone plays the room', async () => (await listening()).playing, 15000);
  await guestPage.waitForTimeout(3000);
  const heard = await listening();
  check(/in time with the room/.test(await guestPage.textContent('#listen-status')), `the page says it plays in time: ${JSON.stringify(heard)}`);
  check(heard.lead_ms > 20, `blocks come ahead of their instant: ${heard.lead_ms} ms`);
  check(Math.abs(heard.err_us) < 1000 && heard.jumps <= 1, `it follows the room's clock: ${JSON.stringify(heard)}`);
  check(heard.played > 48000 * 2, `it played: ${heard.played} frames`);
  figures.listen = { lead_ms: heard.lead_ms, err_us: heard.err_us, underruns: heard.underruns, jumps: heard.jumps,
    rtt_ms: heard.rtt_ms, output_latency_ms: heard.output_latency_ms };
  await guestPage.check('#listen-apart');
  await until('the apart toggle plays as early as it can', async () => {
    const s = await listening();
    return s.mode === 'apart' && /apart/.test(await guestPage.textContent('#listen-status')) && s.buffered_ms < 60;
  });
  await guestPage.uncheck('#listen-apart');
  await guestPage.click('#listen-stop');
  await until('stop stops', async () => /^Stopped: you stopped it/.test(await guestPage.textContent('#listen-status')));
  check(!(await listening()).playing, 'nothing plays after stop');
  await guestPage.click('#listen-play');
  await until('it plays again', async () => (await listening()).playing, 15000);

  step('the host sends the listening guest away: the phone stops at once');
  await guestRow.locator('button.kick').click();
  await until('the guest leaves the list', async () => (await guestRow.count()) === 0);
  let said = '';
  await until('the phone stops and says why', async () => {
    said = `${await guestPage.textContent('#listen-status')} ${JSON.stringify(await listening())}`;
    return /^Stopped: .*sent you away/.test(said) && !(await listening()).playing;
  }).catch((e) => { throw new Error(`${e.message}: ${said}`); });
  await guestPage.reload();
  check((await guestPage.textContent('#heading')) === 'Not a guest', 'the guest sent away sees it');
  await guestPhone.close();

  step("the kitchen's volume and mute, from its room card, land on its player");
  await page.click('#tab-rooms');
  await kitchen.locator('.zone-volume').fill('70');
  await until('the hub sets the kitchen player to 70 %', async () => (await node(LEFT)).settings.volume === 70);
  const roomMute = kitchen.locator('button.zone-mute');
  check((await roomMute.textContent()) === 'unmute room', `its only player is muted: ${await roomMute.textContent()}`);
  await roomMute.click();
  await until('the hub unmutes it', async () => (await node(LEFT)).settings.mute === false);
  await until('the card offers to mute the room', async () => (await roomMute.textContent()) === 'mute room');
  // A second and a half at 70 % in its output, then muted again (the test reads both).
  await page.waitForTimeout(1500);
  await roomMute.click();
  await until('the hub mutes it', async () => (await node(LEFT)).settings.mute === true);
  await page.waitForTimeout(300);
  await kitchen.locator('button.zone-identify').click();
  // The room's chime, then over a second of silence before the room goes (the test needs it).
  await page.waitForTimeout(1700);

  step('a playlist from its card: skip, pause, start, then played in a new, empty room');
  await page.fill('.new-zone', 'patio');
  await page.click('.create-zone');
  await page.locator('.card.zone[data-zone="patio"]').waitFor();
  await page.click('#tab-streams');
  const jukebox = async () => (await api('/api/streams')).find((x) => x.address === JUKEBOX);
  const box2 = page.locator(`.card.stream[data-id="${(await until('the hub lists the playlist', jukebox)).id}"]`);
  await box2.waitFor();
  const track = async () => (await box2.locator('p.track').textContent()) + ' ' + (await box2.locator('p.track + p').textContent());
  await until('it plays its first track', async () => /1-low/.test(await track()) && /playing/.test(await track()));
  await box2.locator('button.transport.skip').click();
  await until('skip: the second track', async () => /2-high/.test(await track()));
  await box2.locator('button.transport.pause').click();
  await until('pause: paused', async () => /paused/.test(await track()));
  check((await jukebox()).track.transport === 'paused', 'the hub has it paused');
  await box2.locator('button.transport.start').click();
  await until('start: playing', async () => /playing/.test(await track()));
  await box2.locator('select.route').selectOption('patio');
  await until('the hub routes the patio to the playlist', async () =>
    (await api('/api/zones')).some((z) => z.name === 'patio' && z.source === JUKEBOX));
  await until('the card lists the patio among its rooms', async () => /patio/.test(await box2.locator('.listeners').textContent()));

  step('the kitchen renamed, then deleted, from its card');
  await page.click('#tab-rooms');
  await kitchen.locator('button.rename-start').click();
  await kitchen.locator('input.rename').fill('den');
  await kitchen.locator('button.rename-ok').click();
  const den = page.locator('.card.zone[data-zone="den"]');
  await den.waitFor();
  await until('the hub has the den, with the stream and the player, and no kitchen', async () => {
    const zones = await api('/api/zones');
    return zones.some((z) => z.name === 'den' && z.source === SOURCE) && !zones.some((z) => z.name === 'kitchen') &&
      (await node(LEFT)).settings.zone === 'den';
  });
  check((await kitchen.count()) === 0, 'the kitchen card is gone');
  await den.locator('button.zone-delete').click();
  await until('the hub deleted the den', async () => !(await api('/api/zones')).some((z) => z.name === 'den'));
  await until('its card is gone', async () => (await den.count()) === 0);

  step('the read-only token sees everything and changes nothing');
  const ro = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const look = await ro.newPage();
  await look.goto(HUB + '/login');
  await look.fill('#token', READ);
  await look.click('#login');
  await look.locator('#read-only').waitFor();
  const rightRo = look.locator(`.card.node[data-id="${RIGHT}"]`);
  await rightRo.waitFor();
  check(await rightRo.locator('button.mute').isDisabled(), 'mute is disabled');
  check(await rightRo.locator('input.volume').isDisabled(), 'the slider is disabled');
  await rightRo.locator('button.mute').click({ force: true }).catch(() => {});
  await look.waitForTimeout(300);
  check((await node(RIGHT)).settings.mute === false, 'the right player is not muted');
  await ro.close();

  step('log out: the page asks for a token again');
  await page.click('.logout button');
  await page.waitForURL(/\/login$/);
  await page.goto(HUB + '/');
  check(page.url().endsWith('/login'), 'logged out');
} finally {
  await browser.close();
}
console.log(JSON.stringify(figures));
