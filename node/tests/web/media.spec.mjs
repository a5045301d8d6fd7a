// The gateway's media in a real browser: a shared song opened by its
// gateway address plays in the page instead of downloading, and an
// <audio> element pointed at it loads, plays (currentTime advances) and
// seeks; a file that is not media still downloads. Run by node/tests/web_ui.rs with CANOPY_MEDIA_URL (a WAV file of
// 2 s) and CANOPY_OTHER_URL (a file that must still download).
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const MEDIA = env('CANOPY_MEDIA_URL');
const OTHER = env('CANOPY_OTHER_URL');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required'],
});
let failed = false;
try {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);

  // Opened directly: a media document with a player, not a download.
  const response = await page.goto(MEDIA);
  if (response.headers()['content-type'] !== 'audio/wav') {
    throw new Error('served as ' + response.headers()['content-type']);
  }
  await page.locator('video, audio').first().waitFor({ state: 'attached' });
  step('opened', { type: response.headers()['content-type'] });

  // A file that is not media still downloads.
  const download = page.waitForEvent('download');
  await page.goto(OTHER).catch(() => {});
  const saved = await download;
  step('other-downloads', { name: saved.suggestedFilename() });

  // An <audio> element: loads, plays, seeks. (In a page of the gateway's
  // origin: Chromium keeps a page of no origin, such as about:blank, from
  // loading anything on loopback.)
  await page.goto(MEDIA);
  const played = await page.evaluate(async (src) => {
    const audio = document.createElement('audio');
    document.body.append(audio);
    const event = (name) => new Promise((resolve, reject) => {
      audio.addEventListener(name, resolve, { once: true });
      audio.addEventListener('error', () => reject(new Error('media error ' + (audio.error && audio.error.code))), { once: true });
    });
    const loaded = event('loadedmetadata');
    audio.src = src;
    await loaded;
    const duration = audio.duration;
    await audio.play();
    const start = performance.now();
    while (audio.currentTime < 0.3 && performance.now() - start < 5000) await new Promise((r) => setTimeout(r, 50));
    const playedTo = audio.currentTime;
    audio.pause();
    const seeked = event('seeked');
    audio.currentTime = 1.5;
    await seeked;
    return { duration, playedTo, seekedTo: audio.currentTime };
  }, MEDIA);
  if (Math.abs(played.duration - 2) > 0.05) throw new Error(`duration ${played.duration}, not 2 s`);
  if (!(played.playedTo >= 0.3)) throw new Error(`it did not play: currentTime ${played.playedTo}`);
  if (Math.abs(played.seekedTo - 1.5) > 0.05) throw new Error(`seek landed at ${played.seekedTo}`);
  step('played', played);
} catch (error) {
  failed = true;
  console.error('FAILED:', error.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
