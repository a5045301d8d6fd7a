// Play while downloading in a real browser: an <audio> element pointed at
// the app's player endpoint for a song the node has not downloaded yet
// loads, plays (currentTime advances) and seeks to 35 s of 40 while the
// download runs; each step prints how much of the song was here then.
// Run by node/tests/play.rs with CANOPY_APP (the app's address), CANOPY_KEY
// and CANOPY_HASH (a 40 s WAV file shared by another node).
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const APP = env('CANOPY_APP');
const KEY = env('CANOPY_KEY');
const HASH = env('CANOPY_HASH');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required'],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(30000);
  await page.goto(APP);
  const steps = await page.evaluate(async ({ hash, key }) => {
    const here = async () => {
      const list = await (await fetch('/api/downloads', { headers: { 'X-API-Key': key } })).json();
      const download = list.find((d) => d.hash === hash);
      return download ? { state: download.state, fraction: download.fraction } : { state: 'none', fraction: 0 };
    };
    const audio = document.createElement('audio');
    document.body.append(audio);
    const event = (name, ms) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${name} in ${ms} ms`)), ms);
      audio.addEventListener(name, () => { clearTimeout(timer); resolve(); }, { once: true });
      audio.addEventListener('error', () => reject(new Error('media error ' + (audio.error && audio.error.code))), { once: true });
    });
    const result = {};
    const before = await here();
    const loaded = event('loadedmetadata', 30000);
    audio.src = `/api/play/${hash}?key=${key}&name=song.wav`;
    await loaded;
    result.loaded = { duration: audio.duration, before: before.state, ...(await here()) };
    await audio.play();
    const start = performance.now();
    while (audio.currentTime < 0.5 && performance.now() - start < 15000) await new Promise((r) => setTimeout(r, 50));
    result.played = { currentTime: audio.currentTime, ...(await here()) };
    const seekStart = performance.now();
    const seeked = event('seeked', 15000);
    audio.currentTime = 35;
    await seeked;
    const landed = audio.currentTime;
    const then = await here();
    const seekedAt = performance.now();
    while (audio.currentTime < 35.5 && performance.now() - seekedAt < 10000) await new Promise((r) => setTimeout(r, 50));
    result.seeked = { landed, after: audio.currentTime, seconds: (seekedAt - seekStart) / 1000, ...then };
    audio.pause();
    return result;
  }, { hash: HASH, key: KEY });
  for (const [name, detail] of Object.entries(steps)) step(name, detail);
  if (steps.loaded.before !== 'none') throw new Error(`the song was already downloading: ${steps.loaded.before}`);
  if (Math.abs(steps.loaded.duration - 40) > 0.1) throw new Error(`duration ${steps.loaded.duration}, not 40 s`);
  if (!(steps.played.currentTime >= 0.5)) throw new Error(`it did not play: currentTime ${steps.played.currentTime}`);
  if (Math.abs(steps.seeked.landed - 35) > 0.1) throw new Error(`the seek landed at ${steps.seeked.landed}`);
  if (!(steps.seeked.after >= 35.5)) throw new Error(`it did not play on after the seek: ${steps.seeked.after}`);
  if (steps.seeked.state !== 'running') throw new Error(`the download was ${steps.seeked.state} at the seek, not running`);
} catch (error) {
  failed = true;
  console.error('FAILED:', error.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
