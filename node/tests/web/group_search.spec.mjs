// Searching and downloading within a private group from the app, in
// headless Chromium: the search's "where" offers the group this node runs;
// a search there finds a file shared only in the group (marked so), which
// downloads; the same search on the public network finds nothing.
// Run by node/tests/app_groups.rs with CANOPY_UI_URL and CANOPY_HASH.
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const URL = env('CANOPY_UI_URL');
const HASH = env('CANOPY_HASH');
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
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.setDefaultTimeout(20000);
  await page.goto(URL);
  await page.waitForSelector('#search-where:not([hidden]) option[value="band"]', { state: 'attached' });
  step('offered');

  const search = async (where) => {
    await page.selectOption('#search-where', where);
    await page.fill('#search-text', 'demo tape');
    await page.click('#search-form button[type=submit]');
    // The member's public node has joined no supernode: there a search
    // fails, which finds nothing as surely.
    await page.waitForFunction(() => /found\.|failed/.test(document.querySelector('#search-state').textContent));
    return page.$$eval('#results tbody tr', (rows) => rows.map((row) => row.dataset.hash));
  };
  // The group's supernode may take a moment to index the member's file.
  let found = [];
  for (let attempt = 0; attempt < 20 && !found.includes(HASH); attempt++) {
    found = await search('band');
    if (!found.includes(HASH)) await sleep(500);
  }
  if (!found.includes(HASH)) throw new Error('the group search never found the file');
  const row = page.locator(`#results tbody tr[data-hash="${HASH}"]`);
  const where = await row.locator('td.rating').textContent();
  if (!where.includes('in group band')) throw new Error(`the result is not marked: ${where}`);
  step('found', { where });
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/group-search-1280.png`, fullPage: true });

  await row.locator('button.download').click();
  const done = page.locator(`#downloads tr[data-hash="${HASH}"][data-state="done"]`);
  await done.waitFor({ timeout: 30000 });
  const title = await done.locator('.title').textContent();
  if (!title.includes('(group band)')) throw new Error(`the download is not marked: ${title}`);
  step('downloaded', { title });

  await page.click('nav button[data-tab=search]');
  const outside = await search('');
  if (outside.length) throw new Error(`the public network found the group's file: ${outside}`);
  step('public', { found: outside.length });
  if (pageErrors.length) throw new Error('page errors: ' + pageErrors.join('; '));
} catch (error) {
  failed = true;
  console.error('FAILED:', error.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
