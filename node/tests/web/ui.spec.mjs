// Drives the desktop app in headless Chromium, as a user would:
//   0. the Status tab says how peers reach this node, and no banner says
//      it is not connected;
//   1. search → click Download → the row reaches 100 % and "done";
//   2. a second (rate-capped) download is paused mid-way, stays put while
//      paused, is resumed and finishes;
//   3. a folder added on the Shares tab gets hashed and its file becomes
//      searchable;
//   4. saving one setting (the download cap) saves only that one;
//   5. a download nobody can serve shows as waiting for sources.
// Run by node/tests/web_ui.rs, which starts the nodes, passes their
// details in the environment and checks the files on disk afterwards.
// Prints one JSON line per step; exits non-zero on the first failure.
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const URL = env('CANOPY_UI_URL');
const NEW_SHARE = env('CANOPY_NEW_SHARE');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let failed = false;
try {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(message.text());
  });
  page.setDefaultTimeout(20000);

  await page.goto(URL);
  await page.locator('#connection.live').waitFor();
  step('loaded');

  // 0. The status tab says how peers reach this node: here, on loopback,
  // its supernode sees it at its own address, so directly.
  await page.click('nav button[data-tab=status]');
  const reached = page.locator('#status dt', { hasText: 'Reached' }).locator('xpath=following-sibling::dd[1]');
  await reached.filter({ hasText: 'directly' }).waitFor();
  step('reached', { text: await reached.textContent() });
  // Joined to a supernode: no "not connected" banner.
  if (await page.locator('#network-banner').isVisible()) {
    throw new Error('the not-connected banner shows on a connected node: ' + await page.locator('#network-banner').textContent());
  }

  const search = async (text) => {
    await page.click('nav button[data-tab=search]');
    await page.fill('#search-text', text);
    await page.click('#search-form button[type=submit]');
  };
  const download = (name) => page.locator('#downloads tr.download', { hasText: name });
  const percentOf = async (name) => {
    const text = await download(name).locator('em.percent').textContent();
    const match = /([\d.]+) %/.exec(text);
    if (!match) throw new Error(`no percentage in "${text}"`);
    return Number(match[1]);
  };

  // 1. Search, download, watch it finish.
  await search('quick fox');
  const hit = page.locator('#results tbody tr', { hasText: 'quick-fox.bin' });
  await hit.waitFor();
  await hit.locator('button.download').click();
  await download('quick-fox.bin').locator('em.percent', { hasText: '100 %' }).waitFor();
  await page.locator('#downloads tr.download[data-state=done]', { hasText: 'quick-fox.bin' }).waitFor();
  step('downloaded', { name: 'quick-fox.bin' });

  // 2. Pause mid-way, check it holds still, resume, finish.
  await search('slow river');
  const slowHit = page.locator('#results tbody tr', { hasText: 'slow-river.bin' });
  await slowHit.waitFor();
  await slowHit.locator('button.download').click();
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll('#downloads tr.download')].find((r) => r.textContent.includes('slow-river.bin'));
    const match = row && /([\d.]+) %/.exec(row.querySelector('em.percent').textContent);
    return match && Number(match[1]) > 0;
  });
  await download('slow-river.bin').locator('button.pause').click();
  await page.locator('#downloads tr.download[data-state=paused]', { hasText: 'slow-river.bin' }).waitFor();
  const pausedAt = await percentOf('slow-river.bin');
  if (!(pausedAt > 0 && pausedAt < 100)) throw new Error(`paused at ${pausedAt} %, not mid-way`);
  await page.waitForTimeout(1500);
  const stillAt = await percentOf('slow-river.bin');
  const state = await download('slow-river.bin').getAttribute('data-state');
  if (state !== 'paused' || stillAt !== pausedAt) {
    throw new Error(`while paused it moved: ${pausedAt} % → ${stillAt} % (${state})`);
  }
  step('paused', { percent: pausedAt });
  await download('slow-river.bin').locator('button.resume').click();
  await page.locator('#downloads tr.download[data-state=done]', { hasText: 'slow-river.bin' }).waitFor({ timeout: 30000 });
  step('resumed', { name: 'slow-river.bin' });

  // 3. Share a folder; its file is hashed, published and found.
  await page.click('nav button[data-tab=shares]');
  await page.fill('#share-path', NEW_SHARE);
  await page.click('#share-form button[type=submit]');
  await page.waitForFunction((path) => {
    const row = [...document.querySelectorAll('#folders tbody tr')].find((r) => r.dataset.path === path);
    return row && row.children[1].textContent === '1';
  }, NEW_SHARE);
  step('shared', { folder: NEW_SHARE });
  let found = false;
  for (let attempt = 0; attempt < 20 && !found; attempt++) {
    await search('late comet');
    await page.locator('#search-state', { hasText: 'found.' }).waitFor();
    found = (await page.locator('#results tbody tr', { hasText: 'late-comet.txt' }).count()) > 0;
    if (!found) await page.waitForTimeout(500);
  }
  if (!found) throw new Error('the newly shared file never became searchable');
  step('searchable', { name: 'late-comet.txt' });

  // 5. A download nobody can serve waits, and the row says so.
  await page.evaluate(async (hash) => {
    const key = document.querySelector('meta[name=canopy-key]').content;
    const response = await fetch('/api/downloads', {
      method: 'POST',
      headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ hash, name: 'nowhere.bin' }),
    });
    if (response.status !== 201) throw new Error('POST /api/downloads answered ' + response.status);
  }, 'ab'.repeat(32));
  await page.click('nav button[data-tab=downloads]');
  const nowhere = page.locator('#downloads tr.download[data-waiting=true]', { hasText: 'nowhere.bin' });
  await nowhere.locator('em.percent', { hasText: 'waiting for sources' }).waitFor();
  step('waiting', { said: await nowhere.locator('.stall').textContent() });

  await page.click('nav button[data-tab=settings]');
  const cap = page.locator('#settings-form input[name=max-download-rate]');
  await page.waitForFunction(() => document.querySelector('#settings-form input[name=listen]').value !== '');
  await cap.fill('50000000');
  await page.click('#settings-form button[type=submit]');
  const settingsState = page.locator('#settings-state');
  await settingsState.filter({ hasText: 'Saved' }).waitFor();
  const said = await settingsState.textContent();
  if (/listen|role|gateway/.test(said)) throw new Error('saving the cap touched other settings: ' + said);
  if ((await settingsState.getAttribute('class')) === 'error') throw new Error('a saved setting is shown as an error');
  step('settings', { said });

  if (pageErrors.length) throw new Error('errors in the page: ' + pageErrors.join('; '));
} catch (error) {
  failed = true;
  console.error('FAILED:', error.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
