// Canopy's desktop page: plain DOM, no framework, no build step.
// Talks to the node's JSON API (docs/API.md) with the key the node put in
// the page, and keeps itself current from the server-sent events on
// /api/events.
'use strict';

const KEY = document.querySelector('meta[name="canopy-key"]').content;
const $ = (selector, root = document) => root.querySelector(selector);

/** Calls the API; resolves with the JSON answer or rejects with its error text. */
async function api(method, path, body) {
  const options = { method, headers: { 'X-API-Key': KEY } };
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch('/api/' + path, options);
  const text = await response.text();
  const value = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((value && value.error) || response.statusText);
  return value;
}

function toast(message, bad) {
  const box = $('#toast');
  box.textContent = message;
  box.style.background = bad ? 'var(--bad)' : '';
  box.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove('show'), 3500);
}

/** Runs an API call from a button, reporting a failure. */
function act(promise) {
  promise.catch((error) => toast(error.message, true));
}

// "1 file", "2 files"; "1 leaf", "2 leaves".
function count(n, noun, plural) {
  return `${n} ${n === 1 ? noun : plural || noun + 's'}`;
}

/** Shows a line of state under a form: an error in the error style, else muted. */
function say(node, text, isError) {
  setText(node, text || '');
  node.className = isError ? 'error' : 'muted';
}

/**
 * A cap as people read it: "12 MiB/s", "500 KiB/s" (exact when it is a whole
 * number of those, else to two decimals); '' for none.
 */
function rateText(n) {
  if (n == null || n === '') return '';
  const units = [['GiB/s', 1 << 30], ['MiB/s', 1 << 20], ['KiB/s', 1 << 10]];
  for (const [unit, size] of units) {
    if (n >= size) {
      const value = n / size;
      return (Number.isInteger(value) ? value : Number(value.toFixed(2))) + ' ' + unit;
    }
  }
  return n + ' B/s';
}

function bytes(n) {
  if (n == null) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function duration(seconds) {
  if (seconds == null) return '';
  if (seconds < 60) return seconds + ' s';
  if (seconds < 3600) return Math.floor(seconds / 60) + ' min ' + (seconds % 60) + ' s';
  return Math.floor(seconds / 3600) + ' h ' + Math.floor((seconds % 3600) / 60) + ' min';
}

/** A table cell with text (never HTML: names come from the network). */
function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(label, handler, className) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener('click', handler);
  return b;
}

// Tabs.
for (const tab of document.querySelectorAll('nav button')) {
  tab.addEventListener('click', () => show(tab.dataset.tab));
}
function show(name) {
  for (const b of document.querySelectorAll('nav button')) b.classList.toggle('active', b.dataset.tab === name);
  for (const s of document.querySelectorAll('.tab')) s.classList.toggle('active', s.id === 'tab-' + name);
  if (name === 'settings') loadSettings();
  if (name === 'shares') loadSharedFiles();
  if (name === 'groups') loadGroups();
}

// Search: results stream in as search-hit events for our search id. Events
// can beat the answer that tells the id, so those of unknown searches wait
// in `early` (a few searches' worth) until it arrives.
let currentSearch = null;
const shownHits = new Set();
const early = new Map();

function searchEvent(kind, e) {
  if (e.search === currentSearch) {
    if (kind === 'hit') addHit(e.hit);
    else if (kind === 'ranked') applyRanking(e.ranked);
    else searchDone(e);
    return;
  }
  if (currentSearch !== null && e.search < currentSearch) return;
  if (!early.has(e.search)) {
    early.set(e.search, []);
    if (early.size > 4) early.delete(early.keys().next().value);
  }
  early.get(e.search).push([kind, e]);
}

function searchDone(e) {
  const failed = e.error && !e.hits;
  say($('#search-state'), failed ? 'The search failed: ' + e.error : `${e.hits} found.`, failed);
}
$('#search-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('#search-text').value.trim();
  if (!text) {
    say($('#search-state'), 'Type a few words of a file name to search for.', true);
    return;
  }
  $('#results tbody').replaceChildren();
  shownHits.clear();
  hitRows.length = 0;
  $('#results-tools').hidden = true;
  say($('#search-state'), 'Searching…');
  try {
    currentSearch = null;
    const group = $('#search-where').value || null;
    const answer = await api('POST', 'search', { text, kind: $('#search-kind').value || null, group });
    currentSearch = answer.search;
    for (const [kind, e] of early.get(currentSearch) || []) searchEvent(kind, e);
    early.clear();
  } catch (error) {
    say($('#search-state'), error.message, true);
  }
});

// Results in the order they came, each {row, hit, index}; the table shows
// them sorted and filtered as the user asks.
const hitRows = [];

function addHit(hit) {
  if (shownHits.has(hit.hash)) return;
  shownHits.add(hit.hash);
  const row = document.createElement('tr');
  row.dataset.hash = hit.hash;
  row.dataset.size = hit.size;
  const rating = cell(hit.group ? 'in group ' + hit.group : '', 'rating');
  const name = cell(hit.name, 'name');
  const tags = document.createElement('div');
  tags.className = 'tags';
  tags.hidden = true;
  name.append(tags);
  row.append(name, cell(bytes(hit.size), 'num size'), cell(hit.type, 'type'), cell(hit.sources, 'num sources'), rating);
  const actions = cell('', 'actions');
  actions.append(
    button('Download', () => act(startDownload(hit)), 'primary download'),
    button('Copy link', () => copyLink(hit.link), 'copy'),
  );
  if (hit.playable) actions.append(button('Play', () => play(hit.hash, hit.name), 'play'));
  const trust = button('Trust publisher', () => act(trustPublisher(entry)), 'trust');
  trust.hidden = true;
  actions.append(trust);
  row.append(actions);
  const entry = { row, hit, index: hitRows.length, rank: hitRows.length, rating, trust, tags, ranked: null };
  hitRows.push(entry);
  $('#results-tools').hidden = false;
  placeHits();
  say($('#search-state'), shownHits.size + ' found so far…');
}

// Sorting: a table's sort key and direction, set by its header buttons
// or its select (the select works on narrow screens too, where the
// downloads' header is hidden). '' is the natural order (as found, or the
// queue); clicking the same header again reverses.
const sorting = { results: { key: '', descending: false }, downloads: { key: '', descending: false } };

function compareBy(key, descending, value) {
  return (a, b) => {
    const x = value(a, key);
    const y = value(b, key);
    const order = typeof x === 'string' ? x.localeCompare(y, undefined, { sensitivity: 'base', numeric: true }) : x - y;
    return descending ? -order : order;
  };
}

/** Puts `rows` in `body` in this order, moving only those out of place. */
function placeRows(body, rows) {
  let previous = null;
  for (const row of rows) {
    const wanted = previous ? previous.nextSibling : body.firstChild;
    if (wanted !== row) body.insertBefore(row, wanted);
    previous = row;
  }
}

function hitValue(entry, key) {
  const hit = entry.hit;
  if (key === 'name') return hit.name;
  if (key === 'type') return hit.type;
  if (key === 'size') return hit.size;
  if (key === 'sources') return hit.sources;
  return entry.rank;
}

// When a search ends the node ranks its results for this user: files the
// user called fake last, trusted publishers' first, then by the votes of
// people whose votes agreed with the user's, then by sources. The natural
// order becomes that ranking; each row says why.
function applyRanking(ranked) {
  const byHash = new Map(hitRows.map((entry) => [entry.hit.hash, entry]));
  ranked.forEach((r, place) => {
    const entry = byHash.get(r.hash);
    if (!entry) return;
    entry.rank = place;
    entry.ranked = r;
    showRating(entry);
  });
  placeHits();
}

function showRating(entry) {
  const r = entry.ranked;
  let text = '';
  let mood = '';
  if (r.own === 'down') { text = 'you said: fake'; mood = 'bad'; }
  else if (r.own === 'up') { text = 'you said: good'; mood = 'good'; }
  else if (r.trusted) { text = '★ trusted publisher'; mood = 'good'; }
  else if (r.voters && r.score <= -0.3) { text = `likely fake · ${count(r.voters, 'vote')}`; mood = 'bad'; }
  else if (r.voters && r.score >= 0.3) { text = `good · ${count(r.voters, 'vote')}`; mood = 'good'; }
  else if (r.voters) text = `unsure · ${count(r.voters, 'vote')}`;
  setText(entry.rating, text);
  entry.rating.dataset.mood = mood;
  entry.rating.title = r.publishers.length
    ? 'Vouched for by ' + r.publishers.join(', ') + (r.trusted ? ' (trusted by you)' : '')
    : r.voters ? 'Weighed by how well each voter agreed with your own votes before' : 'Nobody voted on this file';
  entry.trust.hidden = r.trusted || !r.publishers.length;
  // Its tags (artist, title, album, …), as its publisher's files carry them.
  const shown = r.tags ? Object.values(r.tags).join(' · ') : '';
  setText(entry.tags, shown);
  entry.tags.hidden = !shown;
  entry.tags.title = r.tags ? Object.entries(r.tags).map(([k, v]) => `${k}: ${v}`).join('\n') : '';
}

async function trustPublisher(entry) {
  const publisher = entry.ranked.publishers[0];
  await api('POST', 'trust', { publisher, trusted: true });
  toast('You trust ' + publisher.slice(0, 12) + '…: its files come first from now on');
  for (const other of hitRows) {
    if (other.ranked && other.ranked.publishers.includes(publisher)) {
      other.ranked.trusted = true;
      showRating(other);
    }
  }
}

/** Plays a file in a new tab, fetching it first where the player reads. */
function play(hash, name) {
  const url = `/api/play/${hash}?key=${encodeURIComponent(KEY)}&name=${encodeURIComponent(name)}`;
  window.open(url, '_blank', 'noopener');
}

async function vote(d, verdict) {
  await api('POST', 'votes', { hash: d.hash, verdict });
  toast(verdict === 'up' ? `You said ${d.name} is what it says` : `You said ${d.name} is a fake`);
}

function placeHits() {
  const { key, descending } = sorting.results;
  const filter = $('#results-filter').value.trim().toLowerCase();
  // With no column chosen: the ranking (the order found until it comes).
  const sorted = [...hitRows].sort(compareBy(key, key ? descending : false, hitValue));
  for (const { row, hit, tags } of hitRows) {
    row.hidden = Boolean(filter) && !(hit.name + ' ' + hit.type + ' ' + tags.textContent).toLowerCase().includes(filter);
  }
  placeRows($('#results tbody'), sorted.map((entry) => entry.row));
  showSortState('results');
}
$('#results-filter').addEventListener('input', placeHits);

function showSortState(table) {
  const { key, descending } = sorting[table];
  const select = $('#' + table + '-sort');
  if (select.value !== key) select.value = key;
  for (const b of document.querySelectorAll(`#${table} thead button.sort`)) {
    const th = b.closest('th');
    if (b.dataset.key === key && key) th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
    else th.removeAttribute('aria-sort');
  }
}

function sortBy(table, key) {
  const now = sorting[table];
  // Sizes, sources and progress read best largest first.
  const firstDescending = ['size', 'sources', 'progress'].includes(key);
  sorting[table] = now.key === key && key ? { key, descending: !now.descending } : { key, descending: firstDescending };
  if (table === 'results') placeHits(); else placeDownloads();
}
for (const table of ['results', 'downloads']) {
  for (const b of document.querySelectorAll(`#${table} thead button.sort`)) {
    b.addEventListener('click', () => sortBy(table, b.dataset.key));
  }
  $('#' + table + '-sort').addEventListener('change', (event) => {
    const key = event.target.value;
    sorting[table] = { key, descending: ['size', 'sources', 'progress'].includes(key) };
    if (table === 'results') placeHits(); else placeDownloads();
  });
}

async function startDownload(hit) {
  await api('POST', 'downloads', { hash: hit.hash, name: hit.name, group: hit.group || null });
  toast('Downloading ' + hit.name + (hit.group ? ' in group ' + hit.group : ''));
  show('downloads');
}

// Downloads. Each row is made once per download (keyed by its hash) and
// then only its text, bar and buttons change: the list comes again every
// 0.5 s while anything runs, and a row rebuilt under the pointer between
// press and release would swallow the click.
const downloadRows = new Map();
// The hashes in the node's (queue) order, from the last list.
let queueOrder = [];

function renderDownloads(list) {
  $('#downloads-empty').hidden = list.length > 0;
  $('#downloads-tools').hidden = list.length === 0;
  const running = list.filter((d) => d.state === 'running').length;
  const queued = list.filter((d) => d.state === 'queued').length;
  $('#downloads-badge').textContent = running ? running : '';
  setText($('#queue-state'), queued ? `${count(queued, 'download')} queued; ${running} running at once` : '');
  const listed = new Set();
  queueOrder = [];
  for (const d of list) {
    listed.add(d.hash);
    queueOrder.push(d.hash);
    let entry = downloadRows.get(d.hash);
    if (!entry) {
      entry = makeDownloadRow(d.hash);
      downloadRows.set(d.hash, entry);
    }
    entry.place = queueOrder.length;
    updateDownloadRow(entry, d);
  }
  for (const [hash, entry] of downloadRows) {
    if (listed.has(hash)) continue;
    entry.row.remove();
    downloadRows.delete(hash);
  }
  placeDownloads();
  if (detailsOpen && listed.has(detailsOpen)) refreshDetails();
}

function downloadValue(entry, key) {
  const d = entry.current;
  if (key === 'name') return d.name;
  if (key === 'size') return d.size == null ? -1 : d.size;
  if (key === 'progress') return d.state === 'done' ? 2 : d.fraction || 0;
  if (key === 'sources') return d.state === 'running' ? d.active_sources : d.known_sources;
  if (key === 'state') return ['running', 'queued', 'paused', 'failed', 'done'].indexOf(d.state);
  return entry.place;
}

/**
 * Orders and filters the rows. Rows are moved only when out of place
 * (never, in queue order, while the queue holds) and hidden rather than
 * removed by the filter: a row rebuilt or moved under the pointer between
 * press and release would swallow the click.
 */
function placeDownloads() {
  const { key, descending } = sorting.downloads;
  const filter = $('#downloads-filter').value.trim().toLowerCase();
  const entries = queueOrder.map((hash) => downloadRows.get(hash));
  if (key) entries.sort(compareBy(key, descending, downloadValue));
  for (const entry of entries) {
    entry.row.hidden = Boolean(filter) && !entry.current.name.toLowerCase().includes(filter);
  }
  placeRows($('#downloads tbody'), entries.map((entry) => entry.row));
  showSortState('downloads');
}
$('#downloads-filter').addEventListener('input', placeDownloads);

function makeDownloadRow(hash) {
  const row = document.createElement('tr');
  row.className = 'download';
  row.dataset.hash = hash;
  const position = cell('', 'num position');
  const name = cell('', 'name');
  const title = document.createElement('span');
  title.className = 'title';
  const error = document.createElement('div');
  error.className = 'error';
  const note = document.createElement('div');
  note.className = 'stall';
  name.append(title, error, note);
  const progress = document.createElement('td');
  progress.className = 'progress';
  const bar = document.createElement('div');
  bar.className = 'bar';
  const fill = document.createElement('span');
  const label = document.createElement('em');
  label.className = 'percent';
  bar.append(fill, label);
  progress.append(bar);
  const sizeCell = cell('', 'num size');
  const rate = cell('', 'num rate');
  const eta = cell('', 'num eta');
  const sources = cell('', 'num sources');
  const actions = cell('', 'actions');
  const entry = { row, position, title, error, note, fill, label, sizeCell, rate, eta, sources, current: null };
  const path = 'downloads/' + hash;
  // A button sends one request at a time. The row changes when the node
  // says the state changed (a downloads event follows every change): an
  // answer shown here could arrive after a newer event and undo it.
  const send = (b, method, suffix, done, failed) => {
    b.disabled = true;
    api(method, path + suffix)
      .then((answer) => { if (done) toast(done(answer)); })
      .catch((e) => toast(failed ? failed(e) : e.message, true))
      .finally(() => { b.disabled = false; });
  };
  const move = (to, label, symbol) => {
    const b = button(symbol, () => send(b, 'POST', '/' + to), 'move ' + to);
    b.title = label;
    b.setAttribute('aria-label', label);
    return b;
  };
  entry.buttons = {
    pause: button('Pause', () => send(entry.buttons.pause, 'POST', '/pause'), 'pause'),
    resume: button('Resume', () => send(entry.buttons.resume, 'POST', '/resume'), 'resume'),
    open: button('Open folder', () => send(entry.buttons.open, 'POST', '/open',
      (answer) => 'Opened ' + ((answer && answer.opened) || 'the folder of ' + entry.current.name),
      (e) => 'Could not open the folder: ' + e.message), 'open'),
    details: button('Details', () => openDetails(hash), 'details'),
    play: button('Play', () => play(hash, entry.current.name), 'play'),
    good: button('Good', () => act(vote(entry.current, 'up')), 'vote good'),
    fake: button('Fake', () => act(vote(entry.current, 'down')), 'vote fake'),
    copy: button('Copy link', () => copyLink(entry.current.link), 'copy'),
    top: move('top', 'Move to the top of the queue', '⤒'),
    up: move('up', 'Move up in the queue', '↑'),
    down: move('down', 'Move down in the queue', '↓'),
    bottom: move('bottom', 'Move to the bottom of the queue', '⤓'),
    cancel: button('Cancel', () => cancelDownload(entry.current), 'cancel'),
  };
  actions.append(...Object.values(entry.buttons));
  row.append(position, name, sizeCell, progress, rate, eta, sources, actions);
  // A click on the row itself (not on one of its buttons) opens its details.
  row.addEventListener('click', (event) => {
    if (!event.target.closest('button, a, input')) openDetails(hash);
  });
  return entry;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function updateDownloadRow(entry, d) {
  // Just after Resume the node reports 0 verified until it has read the
  // part file again; what was verified before is still in it, so the row
  // keeps showing that instead of dropping to 0 % for a moment.
  // Likewise its size, which never changes once a source has proved it.
  const held = {};
  if (d.state === 'running' && !d.verified && entry.verified) held.verified = entry.verified;
  if (d.size == null && entry.size != null) held.size = entry.size;
  if (Object.keys(held).length) {
    d = Object.assign({}, d, held);
    if (d.size != null) d.fraction = d.size ? d.verified / d.size : 1;
  }
  entry.size = d.size;
  entry.verified = d.verified || 0;
  entry.current = d;
  const { row } = entry;
  row.dataset.state = d.state;
  const percent = d.state === 'done' ? 100 : d.fraction == null ? 0 : Math.floor(d.fraction * 1000) / 10;
  setText(entry.title, d.group ? `${d.name} (group ${d.group})` : d.name);
  setText(entry.error, d.error || '');
  entry.error.hidden = !d.error;
  const waiting = d.state === 'running' && d.waiting;
  const stalled = !waiting && d.state === 'running' && d.stalled;
  let note = '';
  if (waiting) {
    const next = d.waiting.next_look_seconds;
    note = 'No source has this file right now' +
      (next == null ? '; looking…' : `; looking again in ${duration(next)}`);
  } else if (stalled) {
    note = `No data for ${duration(d.stalled.seconds)}: ${d.stalled.reason}`;
  }
  setText(entry.note, note);
  entry.note.hidden = !note;
  if (waiting) row.dataset.waiting = 'true'; else delete row.dataset.waiting;
  if (stalled) row.dataset.stalled = 'true'; else delete row.dataset.stalled;
  const width = percent + '%';
  if (entry.fill.style.width !== width) entry.fill.style.width = width;
  const stopping = d.stopping_to === 'paused' ? 'pausing' : d.stopping_to === 'queued' ? 'back to the queue' : null;
  const shown = stopping || (waiting ? 'waiting for sources' : stalled ? 'stalled' : d.state);
  setText(entry.label, d.state === 'done' ? 'done · 100 %' : `${shown} · ${percent} % of ${bytes(d.size)}`);
  setText(entry.position, String(entry.place));
  setText(entry.sizeCell, bytes(d.size));
  const isRunning = d.state === 'running';
  setText(entry.rate, isRunning ? bytes(d.rate) + '/s' : '');
  setText(entry.eta, isRunning && d.rate >= 1 ? duration(d.eta_seconds) : '');
  setText(entry.sources, isRunning ? `${d.active_sources} / ${d.sources.length}` : String(d.known_sources));
  const b = entry.buttons;
  b.pause.hidden = !(isRunning || d.state === 'queued') || Boolean(stopping);
  b.pause.title = d.state === 'queued' ? 'Takes it out of the queue until you resume it' : 'Stops it, keeping what it downloaded';
  b.resume.hidden = !(d.state === 'paused' || d.state === 'failed');
  b.open.hidden = d.state !== 'done';
  b.play.hidden = !d.playable || d.state === 'failed';
  // Votes are for what the user has seen: a finished file.
  b.good.hidden = b.fake.hidden = d.state !== 'done';
  b.good.setAttribute('aria-pressed', String(d.vote === 'up'));
  b.fake.setAttribute('aria-pressed', String(d.vote === 'down'));
  b.good.title = 'It is what its name says (your vote helps people who agree with you)';
  b.fake.title = 'It is not what its name says: noise, another file, a trap';
  for (const name of ['top', 'up', 'down', 'bottom']) b[name].hidden = d.state === 'done';
  b.copy.hidden = !d.link;
  setText(b.cancel, d.state === 'done' ? 'Clear' : 'Cancel');
  b.cancel.title = d.state === 'done'
    ? 'Removes it from the list; the file stays where it is'
    : 'Stops it and deletes what it downloaded (asks first)';
}

// Cancel asks first, saying what it deletes: the part file of an unfinished
// download is gone for good. A finished one is only taken off the list (its
// file stays), so Clear does not ask.
async function cancelDownload(d) {
  const path = 'downloads/' + d.hash;
  if (d.state !== 'done') {
    const have = d.size == null ? bytes(d.verified) : `${bytes(d.verified)} of ${bytes(d.size)}`;
    const yes = await ask(
      `Cancel “${d.name}”?`,
      `This stops the download and deletes its part file, ${d.path}.part, with the ${have} downloaded so far. ` +
        'Pause keeps it instead.',
      'Delete part file',
      'Keep downloading',
    );
    if (!yes) return;
  }
  try {
    await api('DELETE', path);
    toast(d.state === 'done' ? `Cleared ${d.name} from the list` : `Cancelled ${d.name}; its part file is deleted`);
  } catch (error) {
    toast(error.message, true);
  }
}

// Details of one download: its hash, path, sources and a map of the
// blocks verified so far, kept current while the dialog is open (from
// /api/downloads/HASH/details, which the list does not carry: the map
// is up to 2.7 KB a download).
let detailsOpen = null;
let detailsAsked = false;

function openDetails(hash) {
  detailsOpen = hash;
  const dialog = $('#details');
  dialog.dataset.hash = hash;
  delete dialog.dataset.loaded;
  refreshDetails();
  if (!dialog.open) dialog.showModal();
}

async function refreshDetails() {
  if (!detailsOpen || detailsAsked) return;
  const hash = detailsOpen;
  detailsAsked = true;
  try {
    const d = await api('GET', 'downloads/' + hash + '/details');
    if (detailsOpen === hash) showDetails(d);
  } catch (error) {
    if (detailsOpen === hash) say($('#block-legend'), error.message, true);
  } finally {
    detailsAsked = false;
  }
}

function showDetails(d) {
  const dialog = $('#details');
  setText($('#details-title'), d.name);
  setText($('#details-hash'), d.hash);
  setText($('#details-path'), d.path);
  setText($('#details-size'), d.size == null ? 'not known yet' : `${bytes(d.size)} (${d.size.toLocaleString('en')} bytes)`);
  const stopping = d.stopping_to ? ` (stopping: ${d.stopping_to === 'paused' ? 'pausing' : 'back to the queue'})` : '';
  setText($('#details-state'), d.state + stopping + (d.error ? ': ' + d.error : ''));
  setText($('#details-verified'), d.size == null ? bytes(d.verified) : `${bytes(d.verified)} of ${bytes(d.size)}`);
  setText($('#details-rate'), d.state === 'running' ? bytes(d.rate) + '/s' : '');
  drawBlocks(d.blocks);
  const rows = (d.sources || []).map((source) => {
    const row = document.createElement('tr');
    row.className = 'source';
    row.dataset.state = source.state;
    const peer = cell(source.peer, 'name peer');
    if (source.failure) peer.title = source.failure;
    row.append(peer, cell(source.state + (source.failure ? ' (' + source.failure + ')' : ''), 'state'),
      cell(source.path || '', 'path'), cell(bytes(source.rate) + '/s', 'num'), cell(bytes(source.bytes), 'num'));
    return row;
  });
  $('#details-sources tbody').replaceChildren(...rows);
  $('#details-sources').hidden = rows.length === 0;
  $('#details-no-sources').hidden = rows.length > 0;
  dialog.dataset.loaded = 'true';
}

/** Draws the verified-block map: one bar, green where verified. */
function drawBlocks(blocks) {
  const canvas = $('#block-map');
  const legend = $('#block-legend');
  if (!blocks) {
    canvas.hidden = true;
    say(legend, 'No block map yet: the size is not known until a source has proved it.');
    return;
  }
  canvas.hidden = false;
  const bits = atob(blocks.have);
  const have = (i) => (bits.charCodeAt(i >> 3) >> (i & 7)) & 1;
  let verified = 0;
  for (let i = 0; i < blocks.count; i++) verified += have(i);
  canvas.dataset.count = blocks.count;
  canvas.dataset.verifiedBlocks = verified;
  const width = Math.max(1, Math.floor(canvas.clientWidth * (window.devicePixelRatio || 1)));
  if (canvas.width !== width) canvas.width = width;
  const height = canvas.height;
  const g = canvas.getContext('2d');
  g.fillStyle = '#e3e8e5';
  g.fillRect(0, 0, width, height);
  // Each pixel column shows its blocks' share verified, so a map of 16 384
  // blocks still reads at 300 px.
  g.fillStyle = '#2f8f4e';
  for (let x = 0; x < width; x++) {
    const first = Math.floor((x * blocks.count) / width);
    const last = Math.max(first + 1, Math.floor(((x + 1) * blocks.count) / width));
    let done = 0;
    for (let i = first; i < last; i++) done += have(i);
    if (!done) continue;
    g.globalAlpha = 0.35 + 0.65 * (done / (last - first));
    g.fillRect(x, 0, 1, height);
  }
  g.globalAlpha = 1;
  say(legend, `${count(verified, 'block')} of ${blocks.count} verified (${bytes(blocks.verified_bytes)}; blocks of ${bytes(blocks.block_size)})`);
}

$('#details-close').addEventListener('click', () => $('#details').close());
$('#details').addEventListener('close', () => { detailsOpen = null; });
$('#details-copy-hash').addEventListener('click', () => copyText($('#details-hash').textContent, 'Hash copied'));

/** An in-page confirmation (not window.confirm): resolves true for yes. */
function ask(title, text, yesLabel, noLabel) {
  const dialog = $('#confirm');
  setText($('#confirm-title'), title);
  setText($('#confirm-text'), text);
  setText($('#confirm-yes'), yesLabel);
  setText($('#confirm-no'), noLabel);
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    $('#confirm-no').focus();
  });
}
$('#confirm-yes').addEventListener('click', () => $('#confirm').close('yes'));
$('#confirm-no').addEventListener('click', () => $('#confirm').close('no'));

// Links in: a paste box (and a drop anywhere on the page) takes canopy:
// links and content hashes, several at once, and starts their downloads.
async function addLinks(text) {
  const state = $('#link-state');
  try {
    const answer = await api('POST', 'links', { text });
    const lines = [];
    if (answer.added.length) lines.push(`Downloading ${answer.added.map((d) => d.name).join(', ')}.`);
    for (const failed of answer.failed) lines.push(`${failed.text}: ${failed.error}`);
    setText(state, lines.join('\n'));
    state.className = answer.failed.length ? 'error' : 'muted';
    if (!answer.failed.length) $('#link-text').value = '';
    return answer;
  } catch (error) {
    setText(state, error.message);
    state.className = 'error';
    return null;
  }
}

$('#link-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('#link-text').value.trim();
  if (!text) {
    setText($('#link-state'), 'Paste a canopy: link or a content hash first.');
    $('#link-state').className = 'error';
    return;
  }
  addLinks(text);
});

function droppedText(transfer) {
  return transfer.getData('text/uri-list').split('\n').filter((l) => !l.startsWith('#')).join('\n') ||
    transfer.getData('text/plain');
}
document.addEventListener('dragover', (event) => {
  const types = event.dataTransfer ? [...event.dataTransfer.types] : [];
  if (types.includes('text/uri-list') || types.includes('text/plain')) event.preventDefault();
});
document.addEventListener('drop', (event) => {
  if (!event.dataTransfer || event.target.closest('input, textarea')) return;
  const text = droppedText(event.dataTransfer).trim();
  if (!text) return;
  event.preventDefault();
  show('downloads');
  $('#link-text').value = text;
  addLinks(text);
});

// Links out: a link copied to the clipboard (or, where the browser will
// not, shown selected to copy by hand).
function copyLink(link) {
  return copyText(link, 'Link copied');
}

async function copyText(text, done) {
  try {
    await navigator.clipboard.writeText(text);
    toast(done);
  } catch {
    const box = document.createElement('textarea');
    box.value = text;
    box.setAttribute('readonly', '');
    box.className = 'offscreen';
    document.body.append(box);
    box.select();
    const copied = document.execCommand('copy');
    box.remove();
    if (copied) toast(done);
    else toast('Could not reach the clipboard; copy it by hand: ' + text, true);
  }
}

// Shares.
$('#share-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const path = $('#share-path').value.trim();
  if (!path) return;
  act(api('POST', 'shares', { path }).then((shares) => {
    $('#share-path').value = '';
    toast('Sharing ' + path);
    renderShares(shares);
  }));
});

function renderShares(shares) {
  const rows = shares.folders.map((folder) => {
    const row = document.createElement('tr');
    row.dataset.path = folder.path;
    row.append(
      cell(folder.path + (folder.exists ? '' : ' (missing)'), 'name'),
      cell(folder.files, 'num'),
      cell(bytes(folder.bytes), 'num'),
    );
    const actions = cell('', 'actions');
    actions.append(button('Stop sharing', () => act(api('DELETE', 'shares', { path: folder.path }).then(renderShares)), 'remove'));
    row.append(actions);
    return row;
  });
  $('#folders tbody').replaceChildren(...rows);
  const h = shares.hashing;
  $('#hashing').textContent = shares.scanning
    ? (h.files_to_hash ? `Hashing ${h.files_hashed} of ${count(h.files_to_hash, 'file')} (${bytes(h.bytes_hashed)} of ${bytes(h.bytes_to_hash)})…` : 'Scanning…')
    : '';
  $('#shares-total').textContent = `${count(shares.files, 'file')} shared, ${bytes(shares.bytes)} (downloads included).`;
  if ($('#tab-shares').classList.contains('active') && shares.files !== filesListed) {
    filesListed = shares.files;
    loadSharedFiles();
  }
}

// The files shared, each with a link to copy. Fetched when the tab opens
// and when the number of files shared changes.
let sharedFiles = [];
let filesListed = null;

async function loadSharedFiles() {
  try {
    const answer = await api('GET', 'shares/files');
    sharedFiles = answer.files;
    filesListed = answer.total;
    renderSharedFiles();
    say($('#files-state'), answer.truncated ? `The first ${answer.files.length} of ${count(answer.total, 'file')}.` : '');
  } catch (error) {
    say($('#files-state'), error.message, true);
  }
}

function renderSharedFiles() {
  const filter = $('#files-filter').value.trim().toLowerCase();
  const rows = sharedFiles.filter((f) => !filter || f.name.toLowerCase().includes(filter)).map((file) => {
    const row = document.createElement('tr');
    row.dataset.hash = file.hash;
    const name = cell(file.name, 'name');
    name.title = file.path;
    row.append(name, cell(bytes(file.size), 'num'));
    const actions = cell('', 'actions');
    actions.append(button('Copy link', () => copyLink(file.link), 'copy'));
    row.append(actions);
    return row;
  });
  $('#shared-files tbody').replaceChildren(...rows);
}
$('#files-filter').addEventListener('input', renderSharedFiles);

// Groups: made and joined here, run by `canopy run` beside the public
// network. A group runs from the node's start, so a new one says that a
// restart is needed (the node's groups are started with it).
const RESTART = 'restart needed: stop canopy run (Ctrl-C) and start it again';

async function loadGroups() {
  try {
    renderGroups(await api('GET', 'groups'));
  } catch (error) {
    say($('#groups-state'), error.message, true);
  }
}

// Where searches go: the public network, or a private group this node
// runs (the select is shown once there is one).
function offerGroups(groups) {
  const select = $('#search-where');
  const running = groups.filter((group) => group.running).map((group) => group.name);
  const wanted = ['', ...running];
  const now = [...select.options].map((option) => option.value);
  if (JSON.stringify(now) !== JSON.stringify(wanted)) {
    const chosen = select.value;
    select.replaceChildren(...wanted.map((name) => {
      const option = document.createElement('option');
      option.value = name;
      option.textContent = name ? 'group ' + name : 'public network';
      return option;
    }));
    if (wanted.includes(chosen)) select.value = chosen;
  }
  select.hidden = running.length === 0;
}

function renderGroups(answer) {
  offerGroups(answer.groups);
  const rows = answer.groups.map((group) => {
    const row = document.createElement('tr');
    row.dataset.group = group.name;
    row.dataset.running = group.running;
    const state = cell(group.running ? 'running' : RESTART, group.running ? '' : 'restart');
    row.append(cell(group.name, 'name'), cell(group.port, 'num'), cell(group.role),
      cell(group.shared.join(', '), 'name shared'), state);
    const actions = cell('', 'actions');
    actions.append(button('Invite', () => showInvite(group.name), 'invite'));
    row.append(actions);
    return row;
  });
  $('#groups tbody').replaceChildren(...rows);
  $('#groups').hidden = rows.length === 0;
  $('#groups-empty').hidden = rows.length > 0;
}

async function showInvite(name, invite) {
  try {
    const shown = invite || await api('GET', `groups/${encodeURIComponent(name)}/invite`);
    setText($('#invite-group'), name);
    $('#invite-text').value = shown.text;
    $('#invite-note').hidden = !shown.note;
    say($('#invite-note'), shown.note || '');
    $('#invite-box').hidden = false;
  } catch (error) {
    say($('#groups-state'), error.message, true);
  }
}
$('#invite-copy').addEventListener('click', () => copyText($('#invite-text').value, 'Invite copied'));

$('#group-new-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = $('#group-name').value.trim();
  if (!name) {
    say($('#groups-state'), 'Give the new group a name first.', true);
    return;
  }
  try {
    const group = await api('POST', 'groups', { name });
    $('#group-name').value = '';
    say($('#groups-state'), `Created group ${group.name}; it runs from the next start of canopy run (${RESTART}). ` +
      'Send the invite below to its members.');
    await loadGroups();
    showInvite(group.name, group.invite);
  } catch (error) {
    say($('#groups-state'), error.message, true);
  }
});

$('#group-join-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const invite = $('#group-invite').value.trim();
  if (!invite) {
    say($('#groups-state'), 'Paste the invite (canopy-group:…) first.', true);
    return;
  }
  try {
    const group = await api('POST', 'groups/join', { invite });
    $('#group-invite').value = '';
    say($('#groups-state'), group.running
      ? `Joined group ${group.name} again: the running group takes its new key within seconds.`
      : `Joined group ${group.name}; it runs from the next start of canopy run (${RESTART}).`);
    await loadGroups();
  } catch (error) {
    say($('#groups-state'), error.message, true);
  }
});

// Status.
function renderStatus(s) {
  const facts = [
    ['Role', s.role],
    ['Why', s.role_reason],
    ['Peer address', s.address],
    ['Reached', s.reach.text],
    ['Uptime', duration(s.uptime_seconds)],
    ['Sharing', `${count(s.shared.files, 'file')}, ${bytes(s.shared.bytes)}`],
    ['Upload', `${bytes(s.traffic.upload_rate)}/s (${bytes(s.traffic.uploaded)} in all)`],
    ['Download', `${bytes(s.traffic.download_rate)}/s (${bytes(s.traffic.downloaded)} in all)`],
  ];
  if (s.role === 'supernode') {
    facts.push(['Leaves', `${s.leaves} of ${s.max_leaves}`], ['Files indexed', s.index_documents]);
  }
  if (s.gateway) facts.push(['HTTP gateway', s.gateway + 'HASH']);
  if (s.last_error) facts.push(['Last error', s.last_error]);
  const list = $('#status');
  list.replaceChildren();
  for (const [name, value] of facts) {
    const dt = document.createElement('dt');
    dt.textContent = name;
    const dd = document.createElement('dd');
    dd.textContent = value;
    list.append(dt, dd);
  }
  const banner = $('#network-banner');
  banner.hidden = !s.alone;
  banner.textContent = s.alone_text || '';
  // A supernode's connections are its leaves as well as its neighbours.
  const peers = s.role === 'supernode'
    ? [
      ...(s.leaves ? [`${count(s.leaves, 'leaf', 'leaves')} joined (of ${s.max_leaves} at most)`] : []),
      ...s.neighbours.map((n) => 'neighbour supernode ' + n),
    ]
    : s.supernodes.map((n) => `supernode ${n.address} (${count(n.published, 'file')} published)`);
  $('#peers').replaceChildren(...(peers.length ? peers : ['none yet']).map((text) => {
    const li = document.createElement('li');
    li.textContent = text;
    return li;
  }));
}

// Settings. Only the fields the user changed are sent: saving one cap
// must not pin the others (a saved port that is taken at the next start
// stops the node, where an unset one falls back to a free port).
let shownSettings = {};

function showSettingsState(text, isError) {
  say($('#settings-state'), text, isError);
}

// Which load of the settings is the newest: an older one that answers
// late must not write over a newer one.
let settingsLoad = 0;

async function loadSettings() {
  const serial = ++settingsLoad;
  // What the user types while the settings load is kept, not overwritten
  // when they arrive.
  for (const input of $('#settings-form').elements) delete input.dataset.edited;
  try {
    const settings = await api('GET', 'settings');
    if (serial !== settingsLoad) return;
    const values = Object.assign({}, settings.in_force, settings.saved);
    // Caps are stored in bytes per second and shown in KiB/s or MiB/s; the
    // node reads back what is typed ("12 MiB/s", "500 KiB/s", "2M").
    for (const key of ['max-upload-rate', 'max-download-rate']) values[key] = rateText(values[key]);
    // The queue's limit applies at once: what is in force is what shows.
    values['max-active-downloads'] = settings.in_force['max-active-downloads'];
    shownSettings = {};
    for (const input of $('#settings-form').elements) {
      if (!input.name) continue;
      const value = values[input.name];
      const shown = value == null ? '' : String(value);
      if (!input.dataset.edited) input.value = shown;
      shownSettings[input.name] = shown.trim();
    }
  } catch (error) {
    showSettingsState(error.message, true);
  }
}

$('#settings-form').addEventListener('input', (event) => {
  if (event.target.name) event.target.dataset.edited = 'yes';
});

$('#settings-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const change = {};
  for (const input of event.target.elements) {
    if (!input.name) continue;
    const text = input.value.trim();
    if (text === shownSettings[input.name]) continue;
    if (input.type === 'number') change[input.name] = text ? Number(text) : null;
    else change[input.name] = text || null;
  }
  if ('download-dir' in change && !change['download-dir']) delete change['download-dir'];
  if (!Object.keys(change).length) {
    showSettingsState('Nothing changed.', false);
    return;
  }
  try {
    const answer = await api('PUT', 'settings', change);
    for (const input of event.target.elements) {
      if (input.name && input.name in change) shownSettings[input.name] = input.value.trim();
    }
    showSettingsState(answer.restart_needed.length
      ? 'Saved. Takes effect at the next start: ' + answer.restart_needed.join(', ') + '.'
      : 'Saved.', false);
    // Shows caps as the node read them ("2M" becomes "2 MiB/s").
    for (const key of ['max-upload-rate', 'max-download-rate']) {
      const input = event.target.elements[key];
      if (key in change) {
        input.value = rateText(answer.in_force[key]);
        shownSettings[key] = input.value;
      }
    }
  } catch (error) {
    showSettingsState(error.message, true);
  }
});

// Live updates.
function connect() {
  const events = new EventSource('/api/events?key=' + encodeURIComponent(KEY));
  const on = (name, handler) => events.addEventListener(name, (e) => handler(JSON.parse(e.data)));
  events.onopen = () => { $('#connection').textContent = 'live'; $('#connection').classList.add('live'); };
  events.onerror = () => { $('#connection').textContent = 'reconnecting…'; $('#connection').classList.remove('live'); };
  on('status', renderStatus);
  on('downloads', renderDownloads);
  on('shares', renderShares);
  on('search-hit', (e) => searchEvent('hit', e));
  on('search-done', (e) => searchEvent('done', e));
  on('search-ranked', (e) => searchEvent('ranked', e));
  on('resync', () => {
    act(api('GET', 'downloads').then(renderDownloads));
    act(api('GET', 'shares').then(renderShares));
  });
}
connect();
// The groups this node runs, for the search's "where".
api('GET', 'groups').then((answer) => offerGroups(answer.groups)).catch(() => {});
