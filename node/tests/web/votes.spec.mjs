// Votes, trusted publishers and Play in the desktop app, in headless
// Chromium. The network: a publisher shares "Feeling Good.wav" and vouches
// for it (--sign-shares); two other leaves share a decoy under the same
// name, so the decoy has more sources. In the app:
//   1. a search finds both; the ranking puts the decoy first (sources) and
//      shows the real one's publisher with a Trust publisher button;
//   2. trusting it marks the real one "trusted publisher" and moves it to
//      the top; the trust is kept by the node (GET /api/trust);
//   3. each result has Play; the real one is downloaded, and once done it
//      can be voted on: Good is pressed and the node keeps the vote;
//   4. at 400 px every result's buttons are on screen, no sideways scroll.
// Run by node/tests/app_votes.rs with CANOPY_UI_URL, CANOPY_REAL,
// CANOPY_DECOY and CANOPY_PUBLISHER. One JSON line per step.
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const URL = env('CANOPY_UI_URL');
const REAL = env('CANOPY_REAL');
const DECOY = env('CANOPY_DECOY');
const PUBLISHER = env('CANOPY_PUBLISHER');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.CANOPY_SCREENSHOTS;
const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let failed = false;
const pageErrors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.setDefaultTimeout(20000);
  const shot = async (name) => {
    if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
  };
  const api = (method, path, body) => page.evaluate(async ([method, path, body]) => {
    const key = document.querySelector('meta[name=canopy-key]').content;
    const options = { method, headers: { 'X-API-Key': key } };
    if (body !== undefined) options.body = JSON.stringify(body);
    const response = await fetch('/api/' + path, options);
    return response.json();
  }, [method, path, body]);
  const order = () => page.$$eval('#results tbody tr', (rows) => rows.map((row) => row.dataset.hash));
  const row = (hash) => page.locator(`#results tbody tr[data-hash="${hash}"]`);
  await page.goto(URL);

  // 1. Both found; once ranked, the decoy leads on sources and the real
  // one names its publisher.
  let ranked = false;
  for (let attempt = 0; attempt < 20 && !ranked; attempt++) {
    await page.fill('#search-text', 'feeling good');
    await page.click('#search-form button[type=submit]');
    await page.waitForFunction(() => /found\./.test(document.querySelector('#search-state').textContent));
    const hashes = await order();
    ranked = hashes.length === 2 && await row(REAL).locator('button.trust').isVisible();
    if (!ranked) await sleep(500);
  }
  if (!ranked) throw new Error('the search never showed both files with the real one\'s publisher');
  const before = await order();
  if (before[0] !== DECOY) throw new Error(`untrusted, the decoy (more sources) should lead: ${before}`);
  const title = await row(REAL).locator('td.rating').getAttribute('title');
  if (!title.includes(PUBLISHER)) throw new Error(`the publisher is not named: ${title}`);
  step('ranked', { order: before });

  // Tags come with the ranking: a tagged song shows its artist and title.
  await page.fill('#search-text', 'sinnerman');
  await page.click('#search-form button[type=submit]');
  await page.waitForFunction(() => {
    const tags = document.querySelector('#results tbody tr td.name .tags');
    return tags && !tags.hidden && tags.textContent.includes('Nina Simone');
  });
  step('tags', { shown: await page.textContent('#results tbody tr td.name .tags') });
  await page.fill('#search-text', 'feeling good');
  await page.click('#search-form button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#results tbody tr').length === 2 && /found\./.test(document.querySelector('#search-state').textContent));

  // 2. Trust the publisher: marked, first, kept.
  await row(REAL).locator('button.trust').click();
  await page.waitForFunction((hash) => document.querySelector(`#results tbody tr[data-hash="${hash}"] td.rating`).textContent.includes('trusted publisher'), REAL);
  // The next search ranks it first.
  await page.click('#search-form button[type=submit]');
  await page.waitForFunction(() => /found\./.test(document.querySelector('#search-state').textContent));
  await page.waitForFunction((hash) => {
    const first = document.querySelector('#results tbody tr');
    return first && first.dataset.hash === hash && first.querySelector('td.rating').textContent.includes('trusted');
  }, REAL);
  const trusted = await api('GET', 'trust');
  if (!trusted.trusted.includes(PUBLISHER)) throw new Error(`the node does not keep the trust: ${JSON.stringify(trusted)}`);
  step('trusted', { order: await order() });
  await shot('votes-results-1280');

  // 3. Play is offered; download the real one, then vote on it.
  if (!(await row(REAL).locator('button.play').isVisible())) throw new Error('no Play button on a song');
  await row(REAL).locator('button.download').click();
  await page.waitForSelector(`#downloads tr[data-hash="${REAL}"][data-state="done"]`, { timeout: 30000 });
  const good = page.locator(`#downloads tr[data-hash="${REAL}"] button.vote.good`);
  await good.click();
  await page.waitForFunction((hash) => document.querySelector(`#downloads tr[data-hash="${hash}"] button.vote.good`).getAttribute('aria-pressed') === 'true', REAL);
  const list = await api('GET', 'downloads');
  const voted = list.find((d) => d.hash === REAL);
  if (voted.vote !== 'up') throw new Error(`the node did not keep the vote: ${voted.vote}`);
  step('voted', { vote: voted.vote, playable: voted.playable });
  await shot('votes-downloads-1280');

  // 4. At 400 px every result's buttons are on screen.
  await page.setViewportSize({ width: 400, height: 800 });
  await page.click('nav button[data-tab=search]');
  const layout = await page.evaluate(() => {
    const scroller = document.scrollingElement;
    const off = [];
    for (const b of document.querySelectorAll('#results tbody button')) {
      if (b.hidden) continue;
      const box = b.getBoundingClientRect();
      if (box.left < 0 || box.right > window.innerWidth) off.push(b.textContent);
    }
    return { scrollWidth: scroller.scrollWidth, clientWidth: scroller.clientWidth, off };
  });
  if (layout.scrollWidth > layout.clientWidth || layout.off.length) throw new Error(`at 400 px: ${JSON.stringify(layout)}`);
  step('narrow', layout);
  await shot('votes-results-400');
  if (pageErrors.length) throw new Error('page errors: ' + pageErrors.join('; '));
} catch (error) {
  failed = true;
  console.error('FAILED:', error.message);
  if (pageErrors.length) console.error('page errors:', pageErrors.join('; '));
  try {
    const state = await browser.contexts()[0].pages()[0].evaluate(() => ({
      toast: document.querySelector('#toast').textContent,
      rows: [...document.querySelectorAll('#results tbody tr')].map((r) => r.dataset.hash.slice(0, 8) + ' ' + r.querySelector('td.rating').textContent + ' | ' + r.querySelector('td.rating').title),
    }));
    console.error('state:', JSON.stringify(state));
  } catch (e) { console.error('no state:', e.message); }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
