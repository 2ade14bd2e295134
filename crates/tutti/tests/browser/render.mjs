// The dashboard's first render with many nodes, and five dashboards left open. Run by the e2e
// test `the_dashboard_renders_fifty_nodes_quickly_and_idles_cheaply`, which starts the hub and
// the nodes and measures the hub's CPU while the pages sit open.
//
// Environment: HUB, ADMIN, COUNT (the cards to wait for), PAGES (dashboards left open), IDLE_S
// (how long they stay open after the line `idle` is printed), CHROMIUM.
// Prints `idle` when the pages are open, then one JSON line of figures.

import { chromium } from 'playwright-core';

const { HUB, ADMIN } = process.env;
const COUNT = Number(process.env.COUNT || 50);
const PAGES = Number(process.env.PAGES || 5);
const IDLE_S = Number(process.env.IDLE_S || 10);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(HUB + '/login');
  await page.fill('#token', ADMIN);
  await page.click('#login');
  await page.locator('#tab-speakers').waitFor();
  // From asking for the page to every card drawn: the page, its socket, the first render.
  // Timed in the page, on its own clock from the navigation's start, by a MutationObserver
  // there from the first byte: the moment the last card appears, not when Playwright's next
  // poll (a frame and a DevTools round trip later) notices it.
  await context.addInitScript((n) => {
    const seen = () => {
      if (!window.__tuttiRendered && document.querySelectorAll('.card.node').length >= n) {
        window.__tuttiRendered = performance.now();
      }
    };
    new MutationObserver(seen).observe(document, { childList: true, subtree: true });
  }, COUNT);
  const renders = [];
  for (let i = 0; i < 5; i++) {
    await page.goto(HUB + '/');
    await page.waitForFunction(() => window.__tuttiRendered !== undefined);
    renders.push(await page.evaluate(() => window.__tuttiRendered));
  }
  for (let i = 1; i < PAGES; i++) {
    const p = await context.newPage();
    await p.goto(HUB + '/');
    await p.waitForFunction((n) => document.querySelectorAll('.card.node').length >= n, COUNT);
  }
  console.log('idle');
  await new Promise((r) => setTimeout(r, IDLE_S * 1000));
  console.log(JSON.stringify({ nodes: COUNT, pages: PAGES, first_render_ms: { median: median(renders), all: renders } }));
} finally {
  await browser.close();
}
