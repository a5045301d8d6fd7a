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
  actions.append(button('Download', () => act(startDownload(hit)), 'primary download'));
  row.append(actions);
  $('#results tbody').append(row);
  $('#search-state').textContent = shownHits.size + ' found so far…';
}

async function startDownload(hit) {
  await api('POST', 'downloads', { hash: hit.hash, name: hit.name });
  toast('Downloading ' + hit.name);
  show('downloads');
  renderDownloads(await api('GET', 'downloads'));
}

// Downloads.
function renderDownloads(list) {
  const body = $('#downloads tbody');
  $('#downloads-empty').hidden = list.length > 0;
  const running = list.filter((d) => d.state === 'running').length;
  $('#downloads-badge').textContent = running ? running : '';
  const rows = list.map((d) => {
    const row = document.createElement('tr');
    row.dataset.hash = d.hash;
    row.dataset.state = d.state;
    row.className = 'download';
    const percent = d.fraction == null ? 0 : Math.floor(d.fraction * 1000) / 10;
    const name = cell(d.name, 'name');
    if (d.error) {
      const why = document.createElement('div');
      why.className = 'error';
      why.textContent = d.error;
      name.append(why);
    }
    const waiting = d.state === 'running' && d.waiting;
    if (waiting) {
      const why = document.createElement('div');
      why.className = 'stall';
      const next = d.waiting.next_look_seconds;
      why.textContent = 'No source has this file right now' +
        (next == null ? '; looking…' : `; looking again in ${duration(next)}`);
      name.append(why);
      row.dataset.waiting = 'true';
    }
    const stalled = !waiting && d.state === 'running' && d.stalled;
    if (stalled) {
      const why = document.createElement('div');
      why.className = 'stall';
      why.textContent = `No data for ${duration(d.stalled.seconds)}: ${d.stalled.reason}`;
      name.append(why);
      row.dataset.stalled = 'true';
    }
    const progress = document.createElement('td');
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.style.width = percent + '%';
    const label = document.createElement('em');
    label.className = 'percent';
    const shown = waiting ? 'waiting for sources' : stalled ? 'stalled' : d.state;
    label.textContent = d.state === 'done' ? 'done · 100 %' : `${shown} · ${percent} % of ${bytes(d.size)}`;
    bar.append(fill, label);
    progress.append(bar);
    const sources = d.state === 'running' ? `${d.active_sources} / ${d.sources.length}` : String(d.known_sources);
    row.append(
      name,
      progress,
      cell(d.state === 'running' ? bytes(d.rate) + '/s' : '', 'num'),
      cell(d.state === 'running' ? duration(d.eta_seconds) : '', 'num'),
      cell(sources, 'num'),
    );
    const actions = cell('', 'actions');
    const path = 'downloads/' + d.hash;
    if (d.state === 'running') actions.append(button('Pause', () => act(api('POST', path + '/pause')), 'pause'));
    if (d.state === 'paused' || d.state === 'failed') {
      actions.append(button('Resume', () => act(api('POST', path + '/resume')), 'resume'));
    }
    if (d.state === 'done') actions.append(button('Open folder', () => act(api('POST', path + '/open')), 'open'));
    actions.append(button(d.state === 'done' ? 'Clear' : 'Cancel', () => act(api('DELETE', path)), 'cancel'));
    row.append(actions);
    return row;
  });
  body.replaceChildren(...rows);
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
}

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
