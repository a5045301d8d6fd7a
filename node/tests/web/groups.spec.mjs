// Drives the app's Groups tab in headless Chromium (and first checks that
// the Status of a supernode with a leaf counts it): a node in no group
// says so; a new group is listed with "restart needed" and its invite,
// which Copy puts on the clipboard; a bad name and a bad invite are shown
// as errors; an invite made elsewhere (`canopy group new` on another data
// folder) joins. At 400 px nothing scrolls sideways.
// Run by node/tests/app_queue.rs, which checks the files written.
// Prints one JSON line per step; exits non-zero on the first failure.
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const URL = env('CANOPY_UI_URL');
const INVITE = env('CANOPY_INVITE');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.CANOPY_SCREENSHOTS;
const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));

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
    // The bad name and the bad invite are refused with a 400 on purpose.
    const expected = message.text().includes('Failed to load resource') && message.text().includes('400');
    if (message.type() === 'error' && !expected) pageErrors.push(message.text());
  });
  page.setDefaultTimeout(20000);
  const state = page.locator('#groups-state');

  await page.goto(URL);
  await page.locator('#connection.live').waitFor();
  // This app runs on a supernode with one leaf: its connections say so,
  // not "none yet", and in the singular.
  await page.click('nav button[data-tab=status]');
  await page.locator('#peers li', { hasText: '1 leaf joined' }).waitFor();
  const peers = await page.locator('#peers').textContent();
  if (peers.includes('none yet') || peers.includes('1 leaves')) throw new Error('connections: ' + peers);
  step('connections', { peers });

  await page.click('nav button[data-tab=groups]');
  await page.locator('#groups-empty').waitFor();
  step('empty');

  // A bad name: an error, in the error style.
  await page.fill('#group-name', 'Bad Name!');
  await page.click('#group-new-form button[type=submit]');
  await page.locator('#groups-state.error').waitFor();
  step('bad-name', { said: await state.textContent() });

  await page.fill('#group-name', 'family');
  await page.click('#group-new-form button[type=submit]');
  const family = page.locator('#groups tbody tr[data-group=family]');
  await family.waitFor();
  if ((await family.getAttribute('data-running')) !== 'false') throw new Error('a new group shows as running');
  if (!(await family.locator('td.restart').textContent()).includes('restart needed')) throw new Error('no restart is asked for');
  if (!(await state.textContent()).includes('next start')) throw new Error('the state does not say when it runs: ' + await state.textContent());
  if ((await state.getAttribute('class')) === 'error') throw new Error('a created group is shown as an error');
  await page.locator('#invite-box').waitFor();
  const invite = await page.locator('#invite-text').inputValue();
  if (!invite.startsWith('canopy-group:family?key=')) throw new Error('the invite is ' + invite);
  await page.click('#invite-copy');
  await page.locator('#toast', { hasText: 'Invite copied' }).waitFor();
  if ((await page.evaluate(() => navigator.clipboard.readText())) !== invite) throw new Error('Copy did not copy the invite');
  step('created', { invite: invite.slice(0, 40) + '…' });

  // The Invite button of a listed group shows the same invite again.
  await page.evaluate(() => { document.querySelector('#invite-text').value = ''; });
  await family.locator('button.invite').click();
  await page.waitForFunction(() => document.querySelector('#invite-text').value.startsWith('canopy-group:family?'));

  await page.fill('#group-invite', 'canopy-group:nonsense');
  await page.click('#group-join-form button[type=submit]');
  await page.locator('#groups-state.error', { hasText: 'invite' }).waitFor();
  step('bad-invite', { said: await state.textContent() });

  await page.fill('#group-invite', INVITE);
  await page.click('#group-join-form button[type=submit]');
  await page.locator('#groups tbody tr[data-group=friends]').waitFor();
  if (!(await state.textContent()).includes('Joined group friends')) throw new Error('the join is not confirmed: ' + await state.textContent());
  step('joined');
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/groups-1280.png`, fullPage: true });

  await page.setViewportSize({ width: 400, height: 900 });
  await page.waitForTimeout(300);
  const width = await page.evaluate(() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]);
  if (width[0] > width[1]) throw new Error('at 400 px the groups scroll sideways: ' + width);
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/groups-400.png`, fullPage: true });
  step('narrow', { width });
  if (pageErrors.length) throw new Error('errors in the page: ' + pageErrors.join('; '));
} catch (error) {
  failed = true;
  console.error('FAILED:', error.message);
  if (pageErrors.length) console.error('errors in the page:', pageErrors.join('; '));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
