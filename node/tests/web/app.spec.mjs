// Drives the desktop app in headless Chromium: links in and out, buttons
// that never miss, and a Cancel that asks.
//   1. pasting a canopy: link and a bare hash at once starts both downloads;
//   2. ten human-speed clicks (the button held 150 ms, as a hand does) on
//      Pause/Resume of one download, while another runs and the list is
//      sent every 0.5 s: every click lands, and no row is ever rebuilt;
//   3. Cancel asks and says what it deletes: "Keep" keeps the download and
//      its part file, "Delete part file" removes both;
//   4. a search result's Copy link puts its canopy: link on the clipboard;
//      pasted (with a line that is not a link, refused as an error), it
//      downloads and completes; a download and a shared file copy theirs.
// Run by node/tests/web_ui.rs, which starts the nodes, passes their
// details in the environment and checks the bytes on disk afterwards.
// Prints one JSON line per step; exits non-zero on the first failure.
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const URL = env('CANOPY_UI_URL');
const BACKGROUND_LINK = env('CANOPY_BACKGROUND_LINK');
const BACKGROUND_HASH = env('CANOPY_BACKGROUND_HASH');
const CLICKY_HASH = env('CANOPY_CLICKY_HASH');
const LINKED_HASH = env('CANOPY_LINKED_HASH');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new globalThis.URL(URL).origin });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('console', (message) => {
    // A refused paste answers 200 with its failures listed: an HTTP error
    // the page logs is unexpected.
    // The one 404 asked for on purpose (the cancelled download) is fine.
    const expected = message.text().includes('Failed to load resource') &&
      message.location().url.includes('/api/downloads/' + CLICKY_HASH);
    if (message.type() === 'error' && !expected) pageErrors.push(message.text());
  });
  // window.confirm would be auto-dismissed here: the app must not use it.
  page.on('dialog', (dialog) => {
    pageErrors.push('a native dialog was opened: ' + dialog.message());
    dialog.dismiss();
  });
  page.setDefaultTimeout(20000);

  const api = (method, path) => page.evaluate(async ([method, path]) => {
    const key = document.querySelector('meta[name=canopy-key]').content;
    const response = await fetch('/api/' + path, { method, headers: { 'X-API-Key': key } });
    return { status: response.status, body: await response.json() };
  }, [method, path]);
  const row = (hash) => page.locator(`#downloads tr.download[data-hash="${hash}"]`);
  const stateOf = (hash) => row(hash).getAttribute('data-state');
  const clipboard = () => page.evaluate(() => navigator.clipboard.readText());

  await page.goto(URL);
  await page.locator('#connection.live').waitFor();
  step('loaded');

  // 1. A link and a bare hash, pasted at once.
  await page.click('nav button[data-tab=downloads]');
  await page.fill('#link-text', `${BACKGROUND_LINK}\n   ${CLICKY_HASH}\n`);
  await page.click('#link-form button[type=submit]');
  await row(BACKGROUND_HASH).waitFor();
  await row(CLICKY_HASH).waitFor();
  const pasteState = page.locator('#link-state');
  await pasteState.filter({ hasText: 'Downloading' }).waitFor();
  if ((await pasteState.getAttribute('class')) === 'error') {
    throw new Error('a good paste was shown as an error: ' + (await pasteState.textContent()));
  }
  const backgroundName = await row(BACKGROUND_HASH).locator('.title').textContent();
  if (backgroundName !== 'background.bin') throw new Error(`the link's name was not used: ${backgroundName}`);
  if ((await page.locator('#link-text').inputValue()) !== '') throw new Error('the paste box kept a good paste');
  step('pasted', { said: await pasteState.textContent() });

  // 2. Ten clicks at a human's pace, each held 150 ms, on a row of a list
  // refreshed every 0.5 s: each must flip the download's state.
  const percentOf = async (hash) => {
    const text = await row(hash).locator('em.percent').textContent();
    const match = /([\d.]+) %/.exec(text);
    return match ? Number(match[1]) : 0;
  };
  await page.waitForFunction((hash) => {
    const r = document.querySelector(`#downloads tr.download[data-hash="${hash}"]`);
    const match = r && /([\d.]+) %/.exec(r.querySelector('em.percent').textContent);
    return r && r.dataset.state === 'running' && match && Number(match[1]) > 0;
  }, CLICKY_HASH);
  // Watch the table: rows added or removed, and how often the background
  // row's text changes (proof that updates kept coming during the clicks).
  await page.evaluate(([background]) => {
    window.rowsReplaced = 0;
    window.backgroundUpdates = 0;
    const body = document.querySelector('#downloads tbody');
    new MutationObserver((records) => {
      for (const record of records) window.rowsReplaced += record.removedNodes.length;
    }).observe(body, { childList: true });
    const label = body.querySelector(`tr[data-hash="${background}"] em.percent`);
    new MutationObserver(() => { window.backgroundUpdates += 1; })
      .observe(label, { childList: true, characterData: true, subtree: true });
  }, [BACKGROUND_HASH]);
  const clickyRow = await row(CLICKY_HASH).elementHandle();
  let landed = 0;
  let pausedAt = null;
  for (let click = 0; click < 10; click++) {
    const before = await stateOf(CLICKY_HASH);
    const target = before === 'running' ? 'pause' : 'resume';
    const wanted = before === 'running' ? 'paused' : 'running';
    await sleep(300 + Math.floor(Math.random() * 500));
    const button = row(CLICKY_HASH).locator(`button.${target}`);
    const box = await button.boundingBox();
    if (!box) throw new Error(`click ${click + 1}: no ${target} button to click (state ${before})`);
    // A hand: move there, press, hold, release; no retrying.
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2, { steps: 4 });
    await page.mouse.down();
    await sleep(150);
    await page.mouse.up();
    try {
      await page.waitForFunction(([hash, wanted]) => {
        const r = document.querySelector(`#downloads tr.download[data-hash="${hash}"]`);
        return r && r.dataset.state === wanted;
      }, [CLICKY_HASH, wanted], { timeout: 5000 });
      landed += 1;
    } catch {
      throw new Error(`click ${click + 1} on ${target} did not land (${landed} of ${click} did); state ${await stateOf(CLICKY_HASH)}`);
    }
    // Resumed, the bar goes on from where it was, not from 0 %.
    if (wanted === 'paused') pausedAt = await percentOf(CLICKY_HASH);
    else if (pausedAt !== null) {
      for (let look = 0; look < 3; look++) {
        const now = await percentOf(CLICKY_HASH);
        if (now < pausedAt) throw new Error(`after Resume the bar fell from ${pausedAt} % to ${now} %`);
        await sleep(100);
      }
    }
  }
  const { rowsReplaced, backgroundUpdates } = await page.evaluate(() => ({
    rowsReplaced: window.rowsReplaced,
    backgroundUpdates: window.backgroundUpdates,
  }));
  if (rowsReplaced !== 0) throw new Error(`${rowsReplaced} rows were removed from the table during the clicks`);
  if (backgroundUpdates < 5) throw new Error(`the list was hardly updated during the clicks (${backgroundUpdates} times)`);
  if (!(await row(CLICKY_HASH).evaluate((r, first) => r === first, clickyRow))) {
    throw new Error('the row clicked on was replaced');
  }
  step('clicks', { landed, backgroundUpdates, rowsReplaced, state: await stateOf(CLICKY_HASH) });

  // 3. Cancel asks; "Keep" keeps the download and its part file.
  if ((await stateOf(CLICKY_HASH)) !== 'running') throw new Error('the clicked download should run after 10 clicks');
  const { body: clicky } = await api('GET', 'downloads/' + CLICKY_HASH);
  const part = clicky.path + '.part';
  for (let wait = 0; wait < 50 && !existsSync(part); wait++) await sleep(100);
  if (!existsSync(part)) throw new Error(`no part file at ${part}`);
  const dialog = page.locator('#confirm');
  await row(CLICKY_HASH).locator('button.cancel').click();
  await dialog.waitFor({ state: 'visible' });
  const asked = await dialog.textContent();
  if (!asked.includes(part)) throw new Error(`the confirmation does not say what it deletes: ${asked}`);
  // It says how much is lost: more than nothing, since the bar was past 0 %.
  if (!/the [\d.]+ [KMG]iB( of [\d.]+ MiB)? downloaded/.test(asked)) throw new Error(`the confirmation does not say how much it deletes: ${asked}`);
  if (process.env.CANOPY_SCREENSHOTS) await page.screenshot({ path: `${process.env.CANOPY_SCREENSHOTS}/cancel-asks.png` });
  await page.locator('#confirm-no').click();
  await dialog.waitFor({ state: 'hidden' });
  await sleep(1500);
  if ((await row(CLICKY_HASH).count()) !== 1) throw new Error('"Keep downloading" removed the download');
  if ((await api('GET', 'downloads/' + CLICKY_HASH)).status !== 200) throw new Error('"Keep" cancelled it on the node');
  if ((await stateOf(CLICKY_HASH)) !== 'running') throw new Error('"Keep" stopped the download');
  if (!existsSync(part)) throw new Error('"Keep" deleted the part file');
  // Escape is "keep" too.
  await row(CLICKY_HASH).locator('button.cancel').click();
  await dialog.waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  await sleep(500);
  if ((await row(CLICKY_HASH).count()) !== 1 || !existsSync(part)) throw new Error('Escape cancelled the download');
  step('kept', { part, asked });

  // Confirmed: the row, the download and the part file go.
  await row(CLICKY_HASH).locator('button.cancel').click();
  await dialog.waitFor({ state: 'visible' });
  await page.locator('#confirm-yes').click();
  await row(CLICKY_HASH).waitFor({ state: 'detached' });
  if ((await api('GET', 'downloads/' + CLICKY_HASH)).status !== 404) throw new Error('the node still lists the cancelled download');
  for (let wait = 0; wait < 100 && existsSync(part); wait++) await sleep(100);
  if (existsSync(part)) throw new Error(`the part file ${part} is still there after Cancel`);
  if (existsSync(part + '.state')) throw new Error('the part state file is still there after Cancel');
  if ((await stateOf(BACKGROUND_HASH)) !== 'running') throw new Error('cancelling one download touched another');
  step('cancelled', { part });

  // 4. Copy a search result's link, paste it with a bad line: the link
  // downloads, the bad line is refused as an error.
  let copied = null;
  for (let attempt = 0; attempt < 20 && !copied; attempt++) {
    await page.click('nav button[data-tab=search]');
    await page.fill('#search-text', 'linked cedar');
    await page.click('#search-form button[type=submit]');
    await page.locator('#search-state', { hasText: 'found' }).waitFor();
    const hit = page.locator('#results tbody tr', { hasText: 'linked-cedar.bin' });
    if (await hit.count()) {
      await hit.locator('button.copy').click();
      await page.locator('#toast', { hasText: 'Link copied' }).waitFor();
      copied = await clipboard();
    } else {
      await sleep(500);
    }
  }
  if (!copied) throw new Error('linked-cedar.bin was never found');
  if (!copied.startsWith('canopy:' + LINKED_HASH + '?') || !copied.includes('name=linked-cedar.bin')) {
    throw new Error('the copied link is not the file\'s: ' + copied);
  }
  step('copied', { link: copied });
  await page.click('nav button[data-tab=downloads]');
  await page.fill('#link-text', `not-a-link\n${copied}`);
  await page.click('#link-form button[type=submit]');
  await row(LINKED_HASH).waitFor();
  await page.locator('#link-state.error', { hasText: 'not-a-link' }).waitFor();
  const said = await pasteState.textContent();
  if (!said.includes('not a canopy: link')) throw new Error('the bad line is not explained: ' + said);
  await page.locator(`#downloads tr.download[data-state=done][data-hash="${LINKED_HASH}"]`).waitFor({ timeout: 30000 });
  step('linked', { said });

  // Links dropped on the page go the same way: this one is listed already,
  // and the page says so as an error.
  await page.evaluate((link) => {
    const transfer = new DataTransfer();
    transfer.setData('text/uri-list', link);
    document.querySelector('#downloads').dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }, copied);
  await page.locator('#link-state.error', { hasText: 'already' }).waitFor();
  step('dropped', { said: await pasteState.textContent() });

  // A download's Copy link and a shared file's (the finished download is
  // shared from then on) name the same content.
  await row(LINKED_HASH).locator('button.copy').click();
  const fromDownload = await clipboard();
  if (!fromDownload.startsWith('canopy:' + LINKED_HASH)) throw new Error('a download copied ' + fromDownload);
  await page.click('nav button[data-tab=shares]');
  const shared = page.locator(`#shared-files tbody tr[data-hash="${LINKED_HASH}"]`);
  await shared.waitFor();
  await page.evaluate(() => navigator.clipboard.writeText(''));
  await shared.locator('button.copy').click();
  await page.waitForFunction(async () => (await navigator.clipboard.readText()) !== '');
  const fromShare = await clipboard();
  if (!fromShare.startsWith('canopy:' + LINKED_HASH) || !fromShare.includes('size=')) {
    throw new Error('a shared file copied ' + fromShare);
  }
  step('links-out', { download: fromDownload, share: fromShare });

  // At 400 px the downloads are cards: every button on screen, no
  // sideways scrolling.
  const shots = process.env.CANOPY_SCREENSHOTS;
  await page.click('nav button[data-tab=downloads]');
  if (shots) await page.screenshot({ path: `${shots}/downloads-1280.png`, fullPage: true });
  await page.setViewportSize({ width: 400, height: 800 });
  await sleep(300);
  const narrow = await page.evaluate(() => {
    const buttons = [...document.querySelectorAll('#downloads button')].filter((b) => b.offsetParent !== null);
    const outside = buttons.filter((b) => b.getBoundingClientRect().right > window.innerWidth + 0.5).map((b) => b.textContent);
    return { scroll: document.documentElement.scrollWidth, width: window.innerWidth, buttons: buttons.length, outside };
  });
  if (narrow.scroll > narrow.width || narrow.outside.length || narrow.buttons < 4) {
    throw new Error('at 400 px: ' + JSON.stringify(narrow));
  }
  if (shots) await page.screenshot({ path: `${shots}/downloads-400.png`, fullPage: true });
  step('narrow', narrow);

  if (pageErrors.length) throw new Error('errors in the page: ' + pageErrors.join('; '));
} catch (error) {
  failed = true;
  console.error('FAILED:', error.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
