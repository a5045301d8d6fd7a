// Drives the desktop app's queue, details view, sortable tables and
// settings in headless Chromium, against an app started with
// --max-active-downloads 1 and a slow sharer of three files
// (queue-alpha 9 MB, queue-bravo 7 MB, queue-charlie 5 MB):
//   1. search results sort by size (header clicks) and filter by name;
//   2. three downloads: one runs, two are queued; the move buttons reorder
//      the list; pausing the running one starts the top of the queue;
//   3. the details view shows the hash, the sources and a block map whose
//      verified blocks are the node's;
//   4. Resume with the limit full queues; Settings take "2 MiB/s" (shown
//      back as such) and a limit of 2, which starts the next; a bad cap is
//      shown as an error, in red;
//   5. the downloads sort by size and filter; at 400 px every action is on
//      screen without sideways scrolling.
// Run by node/tests/app_queue.rs. Prints one JSON line per step; exits
// non-zero on the first failure. Screenshots go to $CANOPY_SCREENSHOTS.
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const URL = env('CANOPY_UI_URL');
const HASH = { alpha: env('CANOPY_ALPHA'), bravo: env('CANOPY_BRAVO'), charlie: env('CANOPY_CHARLIE') };
const NAME = { alpha: 'queue-alpha.bin', bravo: 'queue-bravo.bin', charlie: 'queue-charlie.bin' };
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.CANOPY_SCREENSHOTS;

const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let failed = false;
const pageErrors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new globalThis.URL(URL).origin });
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('console', (message) => {
    // The bad cap is refused with a 400 on purpose.
    const expected = message.text().includes('Failed to load resource') && message.text().includes('400');
    if (message.type() === 'error' && !expected) pageErrors.push(message.text());
  });
  page.setDefaultTimeout(20000);
  const shot = async (name) => {
    if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
  };

  const api = (method, path, body) => page.evaluate(async ([method, path, body]) => {
    const key = document.querySelector('meta[name=canopy-key]').content;
    const options = { method, headers: { 'X-API-Key': key } };
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch('/api/' + path, options);
    return { status: response.status, body: await response.json() };
  }, [method, path, body]);
  const row = (file) => page.locator(`#downloads tr.download[data-hash="${HASH[file]}"]`);
  const stateOf = (file) => row(file).getAttribute('data-state');
  const waitState = (file, state, timeout = 20000) => page.waitForFunction(([hash, state]) => {
    const r = document.querySelector(`#downloads tr.download[data-hash="${hash}"]`);
    return r && r.dataset.state === state;
  }, [HASH[file], state], { timeout });
  // The files in the order their rows stand (visible ones only).
  const order = (table) => page.evaluate((table) => [...document.querySelectorAll(`#${table} tbody tr`)]
    .filter((r) => !r.hidden).map((r) => r.dataset.hash), table);
  const files = (hashes) => hashes.map((hash) => Object.keys(HASH).find((file) => HASH[file] === hash) || hash);
  const waitOrder = async (table, wanted) => {
    const hashes = wanted.map((file) => HASH[file]);
    try {
      await page.waitForFunction(([table, hashes]) => {
        const now = [...document.querySelectorAll(`#${table} tbody tr`)].filter((r) => !r.hidden).map((r) => r.dataset.hash);
        return JSON.stringify(now) === JSON.stringify(hashes);
      }, [table, hashes], { timeout: 10000 });
    } catch {
      throw new Error(`${table}: wanted ${wanted.join(', ')}, have ${files(await order(table)).join(', ')}`);
    }
  };

  await page.goto(URL);
  await page.locator('#connection.live').waitFor();
  step('loaded');

  // 1. Search results: sorted by size by a header click, both ways, and
  // filtered by name.
  for (let attempt = 0; attempt < 30; attempt++) {
    await page.fill('#search-text', 'queue');
    await page.click('#search-form button[type=submit]');
    await page.locator('#search-state', { hasText: 'found' }).waitFor();
    if ((await page.locator('#results tbody tr').count()) === 3) break;
    await sleep(500);
  }
  if ((await page.locator('#results tbody tr').count()) !== 3) throw new Error('the three files were never all found');
  await page.click('#results thead button.sort[data-key=size]');
  await waitOrder('results', ['alpha', 'bravo', 'charlie']);
  if ((await page.locator('#results th[aria-sort=descending]').count()) !== 1) throw new Error('the sorted header does not say so');
  await page.click('#results thead button.sort[data-key=size]');
  await waitOrder('results', ['charlie', 'bravo', 'alpha']);
  await page.fill('#results-filter', 'BRAVO');
  await waitOrder('results', ['bravo']);
  await page.fill('#results-filter', '');
  await waitOrder('results', ['charlie', 'bravo', 'alpha']);
  await page.click('#results thead button.sort[data-key=name]');
  await waitOrder('results', ['alpha', 'bravo', 'charlie']);
  step('results-sorted');

  // 2. Three downloads under a limit of one: the first runs, the others wait.
  for (const file of ['alpha', 'bravo', 'charlie']) {
    await page.click('nav button[data-tab=search]');
    await page.locator(`#results tbody tr[data-hash="${HASH[file]}"] button.download`).click();
    await row(file).waitFor();
  }
  await waitState('alpha', 'running');
  await waitState('bravo', 'queued');
  await waitState('charlie', 'queued');
  await sleep(1000);
  const states = { alpha: await stateOf('alpha'), bravo: await stateOf('bravo'), charlie: await stateOf('charlie') };
  if (!same(states, { alpha: 'running', bravo: 'queued', charlie: 'queued' })) {
    throw new Error('the limit of one did not hold: ' + JSON.stringify(states));
  }
  const queueNote = await page.locator('#queue-state').textContent();
  if (!queueNote.includes('2 downloads queued')) throw new Error('the queue is not summed up: ' + queueNote);
  step('queued', { states, queueNote });

  // The move buttons reorder the list (the node's order, which the rows
  // follow).
  await waitOrder('downloads', ['alpha', 'bravo', 'charlie']);
  await row('charlie').locator('button.move.top').click();
  await waitOrder('downloads', ['charlie', 'alpha', 'bravo']);
  await row('bravo').locator('button.move.up').click();
  await waitOrder('downloads', ['charlie', 'bravo', 'alpha']);
  await row('bravo').locator('button.move.down').click();
  await waitOrder('downloads', ['charlie', 'alpha', 'bravo']);
  const positions = await page.locator('#downloads td.position').allTextContents();
  if (!same(positions, ['1', '2', '3'])) throw new Error('the queue positions are ' + positions);
  if ((await stateOf('alpha')) !== 'running') throw new Error('a move stopped the running download');
  step('moved', { order: files(await order('downloads')) });

  // Pausing the running one starts the top of the queue: charlie, though
  // bravo was added before it.
  await page.waitForFunction((hash) => {
    const r = document.querySelector(`#downloads tr.download[data-hash="${hash}"]`);
    const match = r && /([\d.]+) %/.exec(r.querySelector('em.percent').textContent);
    return match && Number(match[1]) > 0;
  }, HASH.alpha);
  await row('alpha').locator('button.pause').click();
  await waitState('alpha', 'paused');
  await waitState('charlie', 'running');
  if ((await stateOf('bravo')) !== 'queued') throw new Error('bravo started out of turn');
  step('next-started');

  // 3. Details: the paused one's block map counts what the node verified;
  // the running one lists its source with its state and path.
  await row('alpha').locator('td.name').click();
  const details = page.locator('#details');
  await details.waitFor({ state: 'visible' });
  await page.waitForFunction((hash) => {
    const d = document.querySelector('#details');
    return d.dataset.hash === hash && d.dataset.loaded === 'true';
  }, HASH.alpha);
  const { body: alphaDetails } = await api('GET', `downloads/${HASH.alpha}/details`);
  const map = await page.locator('#block-map').evaluate((c) => ({
    count: Number(c.dataset.count),
    verified: Number(c.dataset.verifiedBlocks),
    width: c.width,
  }));
  if (map.count !== alphaDetails.blocks.count || map.verified !== alphaDetails.blocks.verified_blocks) {
    throw new Error(`the block map shows ${JSON.stringify(map)}, the node ${JSON.stringify(alphaDetails.blocks)}`);
  }
  if (map.verified === 0 || alphaDetails.blocks.verified_bytes !== alphaDetails.verified) {
    throw new Error('the map does not match the bytes verified: ' + JSON.stringify(alphaDetails));
  }
  // Green where verified: some of the bar is drawn in the accent colour.
  const green = await page.locator('#block-map').evaluate((c) => {
    const pixels = c.getContext('2d').getImageData(0, 0, c.width, 1).data;
    let count = 0;
    for (let i = 0; i < pixels.length; i += 4) if (pixels[i + 1] > pixels[i] + 40) count += 1;
    return count;
  });
  if (green === 0) throw new Error('the block map draws nothing verified');
  if ((await page.locator('#details-hash').textContent()) !== HASH.alpha) throw new Error('the details show another hash');
  await page.click('#details-copy-hash');
  await page.locator('#toast', { hasText: 'Hash copied' }).waitFor();
  if ((await page.evaluate(() => navigator.clipboard.readText())) !== HASH.alpha) throw new Error('Copy did not copy the hash');
  await page.click('#details-close');
  await details.waitFor({ state: 'hidden' });

  await row('charlie').locator('button.details').click();
  await details.waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.querySelector('#details').dataset.loaded === 'true' &&
    document.querySelectorAll('#details-sources tbody tr').length > 0);
  const source = await page.locator('#details-sources tbody tr').first().evaluate((r) => ({
    state: r.dataset.state, path: r.querySelector('.path').textContent, peer: r.querySelector('.peer').textContent,
  }));
  if (!source.peer.includes('@') || !source.state) throw new Error('the source row is incomplete: ' + JSON.stringify(source));
  await sleep(1200); // one more refresh, with the map drawn
  await shot('details-1280');
  await page.click('#details-close');
  step('details', { map, green, source });

  // 4. Resume while the limit is full: queued, not running.
  await row('alpha').locator('button.resume').click();
  await waitState('alpha', 'queued');
  await sleep(1000);
  if ((await stateOf('alpha')) !== 'queued' || (await stateOf('charlie')) !== 'running') {
    throw new Error(`after Resume: alpha ${await stateOf('alpha')}, charlie ${await stateOf('charlie')}`);
  }
  step('resume-queues');

  // Settings: a cap typed with its unit, and the limit raised to 2, which
  // starts the next in the queue (alpha, above bravo).
  await page.click('nav button[data-tab=settings]');
  await page.waitForFunction(() => document.querySelector('#settings-form input[name=listen]').value !== '');
  const limitField = page.locator('#settings-form input[name=max-active-downloads]');
  if ((await limitField.inputValue()) !== '1') throw new Error('the limit shows ' + (await limitField.inputValue()));
  const cap = page.locator('#settings-form input[name=max-download-rate]');
  await cap.fill('2 MiB/s');
  await limitField.fill('2');
  await page.click('#settings-form button[type=submit]');
  const settingsState = page.locator('#settings-state');
  await settingsState.filter({ hasText: 'Saved' }).waitFor();
  if ((await settingsState.getAttribute('class')) === 'error') throw new Error('a saved setting is shown as an error');
  const { body: settings } = await api('GET', 'settings');
  if (settings.in_force['max-download-rate'] !== 2097152) throw new Error('the cap is ' + settings.in_force['max-download-rate']);
  await page.click('nav button[data-tab=status]');
  await page.click('nav button[data-tab=settings]');
  await page.waitForFunction(() => document.querySelector('#settings-form input[name=max-download-rate]').value === '2 MiB/s');
  await shot('settings-saved-1280');
  // A bad cap: refused, named, and shown in the error style.
  await cap.fill('quick');
  await page.click('#settings-form button[type=submit]');
  await page.locator('#settings-state.error', { hasText: 'max-download-rate' }).waitFor();
  const errorColour = await settingsState.evaluate((p) => getComputedStyle(p).color);
  if (errorColour !== 'rgb(179, 38, 30)') throw new Error('the error is not shown in red: ' + errorColour);
  await shot('settings-1280');
  await cap.fill('2 MiB/s');
  await page.click('nav button[data-tab=downloads]');
  await waitState('alpha', 'running');
  if ((await stateOf('bravo')) !== 'queued') throw new Error('bravo should wait under a limit of 2');
  step('settings', { errorColour });

  // 5. Sorting the downloads by size, both ways, and back to the queue.
  await page.click('#downloads thead button.sort[data-key=size]');
  await waitOrder('downloads', ['alpha', 'bravo', 'charlie']);
  await page.click('#downloads thead button.sort[data-key=size]');
  await waitOrder('downloads', ['charlie', 'bravo', 'alpha']);
  await page.fill('#downloads-filter', 'alpha');
  await waitOrder('downloads', ['alpha']);
  await page.fill('#downloads-filter', '');
  await page.click('#downloads thead button.sort[data-key=""]');
  await waitOrder('downloads', ['charlie', 'alpha', 'bravo']);
  // Sorted rows are updated in place: the same elements, only moved.
  step('downloads-sorted');
  // One of each state on screen for the narrow check: bravo paused.
  await row('bravo').locator('button.pause').click();
  await waitState('bravo', 'paused');
  await shot('downloads-1280');

  // At 400 px: no sideways scrolling, and every action of every row on
  // screen: Pause, Resume, Cancel, Details and the moves.
  await page.setViewportSize({ width: 400, height: 900 });
  await sleep(400);
  const narrow = await page.evaluate(() => {
    const scroller = document.scrollingElement;
    const buttons = [...document.querySelectorAll('#downloads tbody button')].filter((b) => b.offsetParent !== null);
    const outside = buttons.filter((b) => {
      const box = b.getBoundingClientRect();
      return box.left < -0.5 || box.right > window.innerWidth + 0.5 || box.width === 0;
    }).map((b) => b.className);
    const kinds = [...new Set(buttons.map((b) => b.className.replace('move ', '')))].sort();
    return { scrollWidth: scroller.scrollWidth, clientWidth: scroller.clientWidth, buttons: buttons.length, outside, kinds };
  });
  for (const kind of ['pause', 'resume', 'cancel', 'details', 'up', 'down', 'top', 'bottom']) {
    if (!narrow.kinds.includes(kind)) throw new Error(`at 400 px no ${kind} button is shown: ${JSON.stringify(narrow)}`);
  }
  if (narrow.scrollWidth > narrow.clientWidth || narrow.outside.length) throw new Error('at 400 px: ' + JSON.stringify(narrow));
  await shot('downloads-400');
  await row('charlie').locator('button.details').click();
  await details.waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.querySelector('#details').dataset.loaded === 'true');
  await sleep(300);
  const dialogBox = await details.boundingBox();
  const closeBox = await page.locator('#details-close').boundingBox();
  if (dialogBox.x < 0 || dialogBox.x + dialogBox.width > 400.5 || closeBox.x + closeBox.width > 400.5) {
    throw new Error('at 400 px the details do not fit: ' + JSON.stringify({ dialogBox, closeBox }));
  }
  await shot('details-400');
  await page.click('#details-close');
  await page.click('nav button[data-tab=settings]');
  await sleep(300);
  const settingsWidth = await page.evaluate(() => document.scrollingElement.scrollWidth);
  if (settingsWidth > 400) throw new Error('at 400 px the settings scroll sideways: ' + settingsWidth);
  await shot('settings-400');
  step('narrow', narrow);

  if (pageErrors.length) throw new Error('errors in the page: ' + pageErrors.join('; '));
} catch (error) {
  failed = true;
  console.error('FAILED:', error.message);
  if (pageErrors.length) console.error('errors in the page:', pageErrors.join('; '));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
