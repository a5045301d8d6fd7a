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

// "1 file", "2 files".
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
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
  $('#search-state').textContent = e.error && !e.hits ? e.error : `${e.hits} found.`;
}
$('#search-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('#search-text').value.trim();
  if (!text) {
    $('#search-state').textContent = 'Type a few words of a file name to search for.';
    return;
  }
  $('#results tbody').replaceChildren();
  shownHits.clear();
  $('#search-state').textContent = 'Searching…';
  try {
    currentSearch = null;
    const answer = await api('POST', 'search', { text, kind: $('#search-kind').value || null });
    currentSearch = answer.search;
    for (const [kind, e] of early.get(currentSearch) || []) searchEvent(kind, e);
    early.clear();
  } catch (error) {
    $('#search-state').textContent = error.message;
  }
});

function addHit(hit) {
  if (shownHits.has(hit.hash)) return;
  shownHits.add(hit.hash);
  const row = document.createElement('tr');
  row.dataset.hash = hit.hash;
  row.append(cell(hit.name, 'name'), cell(bytes(hit.size), 'num'), cell(hit.type), cell(hit.sources, 'num'));
  const actions = cell('', 'actions');
  actions.append(
    button('Download', () => act(startDownload(hit)), 'primary download'),
    button('Copy link', () => copyLink(hit.link), 'copy'),
  );
  row.append(actions);
  $('#results tbody').append(row);
  $('#search-state').textContent = shownHits.size + ' found so far…';
}

async function startDownload(hit) {
  await api('POST', 'downloads', { hash: hit.hash, name: hit.name });
  toast('Downloading ' + hit.name);
  show('downloads');
}

// Downloads. Each row is made once per download (keyed by its hash) and
// then only its text, bar and buttons change: the list comes again every
// 0.5 s while anything runs, and a row rebuilt under the pointer between
// press and release would swallow the click.
const downloadRows = new Map();

function renderDownloads(list) {
  const body = $('#downloads tbody');
  $('#downloads-empty').hidden = list.length > 0;
  const running = list.filter((d) => d.state === 'running').length;
  $('#downloads-badge').textContent = running ? running : '';
  const listed = new Set();
  let previous = null;
  for (const d of list) {
    listed.add(d.hash);
    let entry = downloadRows.get(d.hash);
    if (!entry) {
      entry = makeDownloadRow(d.hash);
      downloadRows.set(d.hash, entry);
    }
    updateDownloadRow(entry, d);
    // Moved only when out of place (never, while the order holds).
    const wanted = previous ? previous.nextSibling : body.firstChild;
    if (wanted !== entry.row) body.insertBefore(entry.row, wanted);
    previous = entry.row;
  }
  for (const [hash, entry] of downloadRows) {
    if (listed.has(hash)) continue;
    entry.row.remove();
    downloadRows.delete(hash);
  }
}

function makeDownloadRow(hash) {
  const row = document.createElement('tr');
  row.className = 'download';
  row.dataset.hash = hash;
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
  const rate = cell('', 'num rate');
  const eta = cell('', 'num eta');
  const sources = cell('', 'num sources');
  const actions = cell('', 'actions');
  const entry = { row, title, error, note, fill, label, rate, eta, sources, current: null };
  const path = 'downloads/' + hash;
  // A button sends one request at a time. The row changes when the node
  // says the state changed (a downloads event follows every change): an
  // answer shown here could arrive after a newer event and undo it.
  const send = (b, method, suffix, done) => {
    b.disabled = true;
    api(method, path + suffix)
      .then(() => { if (done) toast(done()); })
      .catch((e) => toast(e.message, true))
      .finally(() => { b.disabled = false; });
  };
  entry.buttons = {
    pause: button('Pause', () => send(entry.buttons.pause, 'POST', '/pause'), 'pause'),
    resume: button('Resume', () => send(entry.buttons.resume, 'POST', '/resume'), 'resume'),
    open: button('Open folder', () => send(entry.buttons.open, 'POST', '/open',
      () => 'Opened the folder of ' + entry.current.name), 'open'),
    copy: button('Copy link', () => copyLink(entry.current.link), 'copy'),
    cancel: button('Cancel', () => cancelDownload(entry.current), 'cancel'),
  };
  actions.append(...Object.values(entry.buttons));
  row.append(name, progress, rate, eta, sources, actions);
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
  setText(entry.title, d.name);
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
  const shown = waiting ? 'waiting for sources' : stalled ? 'stalled' : d.state;
  setText(entry.label, d.state === 'done' ? 'done · 100 %' : `${shown} · ${percent} % of ${bytes(d.size)}`);
  const isRunning = d.state === 'running';
  setText(entry.rate, isRunning ? bytes(d.rate) + '/s' : '');
  setText(entry.eta, isRunning ? duration(d.eta_seconds) : '');
  setText(entry.sources, isRunning ? `${d.active_sources} / ${d.sources.length}` : String(d.known_sources));
  const b = entry.buttons;
  b.pause.hidden = !isRunning;
  b.resume.hidden = !(d.state === 'paused' || d.state === 'failed');
  b.open.hidden = d.state !== 'done';
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
async function copyLink(link) {
  try {
    await navigator.clipboard.writeText(link);
    toast('Link copied');
  } catch {
    const box = document.createElement('textarea');
    box.value = link;
    box.setAttribute('readonly', '');
    box.className = 'offscreen';
    document.body.append(box);
    box.select();
    const copied = document.execCommand('copy');
    box.remove();
    if (copied) toast('Link copied');
    else toast('Could not reach the clipboard; the link is: ' + link, true);
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
    ? (h.files_to_hash ? `Hashing ${h.files_hashed} of ${h.files_to_hash} files (${bytes(h.bytes_hashed)} of ${bytes(h.bytes_to_hash)})…` : 'Scanning…')
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
    setText($('#files-state'), answer.truncated ? `The first ${answer.files.length} of ${answer.total} files.` : '');
    $('#files-state').className = 'muted';
  } catch (error) {
    setText($('#files-state'), error.message);
    $('#files-state').className = 'error';
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

// Status.
function renderStatus(s) {
  const facts = [
    ['Role', s.role],
    ['Why', s.role_reason],
    ['Peer address', s.address],
    ['Reached', s.reach.text],
    ['Uptime', duration(s.uptime_seconds)],
    ['Sharing', `${s.shared.files} files, ${bytes(s.shared.bytes)}`],
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
  const peers = s.role === 'supernode'
    ? s.neighbours.map((n) => 'neighbour supernode ' + n)
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
  $('#settings-state').textContent = text;
  $('#settings-state').className = isError ? 'error' : '';
}

async function loadSettings() {
  try {
    const settings = await api('GET', 'settings');
    const values = Object.assign({}, settings.in_force, settings.saved);
    shownSettings = {};
    for (const input of $('#settings-form').elements) {
      if (!input.name) continue;
      const value = values[input.name];
      input.value = value == null ? '' : value;
      shownSettings[input.name] = input.value.trim();
    }
  } catch (error) {
    showSettingsState(error.message, true);
  }
}

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
  on('resync', () => {
    act(api('GET', 'downloads').then(renderDownloads));
    act(api('GET', 'shares').then(renderShares));
  });
}
connect();
