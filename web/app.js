// engine web UI: search page + document page, routed on the URL hash.
//   #/?q=TEXT&mode=MODE[&c=COLLECTION][&filter=JSON][&alpha=X]
//                         search (the query lives in the URL: links, back/forward work)
//   #/doc/ID[?c=COLLECTION]  one document (ID is encodeURIComponent'd; may contain '/')
// The collection picker lists GET /collections; the filters are built from the collection's
// GET fields (metadata keys and sample values); the slider sends alpha in hybrid mode.
// Server text only ever reaches the page through textContent / text nodes.

import { highlightSegments } from './highlight.js';

const PAGE = 10;
const DEFAULT_MODES = ['dense', 'bm25', 'hybrid'];
const $ = (id) => document.getElementById(id);

const el = {
  form: $('search-form'), q: $('q'), modes: $('modes'), progress: $('progress'),
  error: $('error'), searchView: $('search-view'), summary: $('summary'),
  intro: $('intro'), results: $('results'), more: $('more'), end: $('end'), weak: $('weak'),
  docView: $('doc-view'), back: $('back'), docTitle: $('doc-title'), docId: $('doc-id'),
  docText: $('doc-text'), docMetaSection: $('doc-meta-section'), docMeta: $('doc-meta'),
  status: $('status'), health: $('health'),
  collection: $('collection'), collectionRow: $('collection-row'),
  alpha: $('alpha'), alphaRow: $('alpha-row'), alphaValue: $('alpha-value'),
  filters: $('filters'), filtersBox: $('filters-box'),
};

// The collection searched; '' routes (search, documents, status, fields) are the default's.
let collection = 'default';
const base = () => (collection === 'default' ? '' : `collections/${encodeURIComponent(collection)}/`);
// Whether the slider was moved: untouched, hybrid uses the server's fusion.
let alphaSet = false;

// What the search view currently shows, so "back" from a document is instant.
// `next` is the server offset of the next page (hits with an id already shown are skipped).
const shown = {
  key: null, query: '', mode: '', hits: [], ids: new Set(), next: 0, took: 0, more: false,
  scoreKind: '', words: new Set(),
};
let searchHash = '#/';   // last search route, target of the back link
let cameFromSearch = false;
let searchScroll = 0;
let inflight = null;     // AbortController of the running request

// ---------- HTTP ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { signal } = {}) {
  let res;
  try {
    res = await fetch(path, { headers: { Accept: 'application/json' }, signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Could not reach the server.');
  }
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const err = body && body.error;
    const code = (err && err.code) || (res.status === 429 ? 'overloaded' : `http_${res.status}`);
    let msg = (err && err.message) || res.statusText || 'Request failed.';
    if (res.status === 429) msg = `The server is busy — please try again in a moment. (${msg})`;
    throw new ApiError(res.status, code, msg);
  }
  if (body === null) throw new ApiError(res.status, 'bad_response', 'The server sent a reply that is not JSON.');
  return body;
}

function startRequest() {
  if (inflight) inflight.abort();
  inflight = new AbortController();
  el.progress.hidden = false;
  document.body.setAttribute('aria-busy', 'true');
  return inflight;
}

function endRequest(ctrl) {
  if (inflight !== ctrl) return;
  inflight = null;
  el.progress.hidden = true;
  document.body.removeAttribute('aria-busy');
}

// Shows an error; with `retry`, a button that runs it again.
function showError(e, retry) {
  if (!e) { el.error.hidden = true; el.error.textContent = ''; return; }
  el.error.replaceChildren();
  const strong = document.createElement('strong');
  strong.textContent = e.status ? `Error ${e.status}` : 'Error';
  const code = document.createElement('code');
  code.textContent = e.code || 'error';
  el.error.append(strong, ' ', code);
  if (retry) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'secondary retry';
    button.textContent = 'Retry';
    button.addEventListener('click', () => { showError(null); retry(); });
    el.error.append(button);
  }
  el.error.append(document.createElement('br'), e.message || String(e));
  el.error.hidden = false;
  // The server may have gone: look now rather than at the next poll.
  if (!e.status || e.status >= 500) checkHealth();
}

// ---------- health ----------

// The footer's dot follows /readyz: ok (200), loading (503), down (no answer or another status);
// polled, and checked at once after a failed request.
const HEALTH = {
  ok: 'server: ready', loading: 'server: loading the model and index', down: 'server: unreachable',
};
let healthTimer = null;

async function checkHealth() {
  clearTimeout(healthTimer);
  let state;
  try {
    const res = await fetch('readyz', { headers: { Accept: 'application/json' }, cache: 'no-store' });
    state = res.ok ? 'ok' : res.status === 503 ? 'loading' : 'down';
  } catch {
    state = 'down';
  }
  const was = el.health.dataset.health;
  el.health.dataset.health = state;
  el.health.title = HEALTH[state];
  el.health.setAttribute('aria-label', HEALTH[state]);
  // Back (or ready at last): the status line may be stale or missing.
  if (state === 'ok' && was !== 'ok' && el.status.dataset.ready !== 'true') loadStatus();
  healthTimer = setTimeout(checkHealth, state === 'ok' ? 10_000 : 2_000);
}

// ---------- status + modes ----------

function renderModes(modes, current) {
  el.modes.replaceChildren(...modes.map((m) => {
    const label = document.createElement('label');
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'mode';
    input.value = m;
    input.checked = m === current;
    const span = document.createElement('span');
    span.textContent = m;
    label.append(input, span);
    return label;
  }));
  if (!el.modes.querySelector('input:checked')) el.modes.querySelector('input').checked = true;
}

const currentMode = () => el.modes.querySelector('input:checked')?.value || DEFAULT_MODES[0];
const fmt = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : '?');

async function loadStatus() {
  try {
    const s = await api(`${base()}status`);
    el.status.replaceChildren();
    const parts = [
      ['documents', fmt(s.documents)], ['passages', s.lexical_only ? undefined : fmt(s.passages)],
      ['encoder', s.encoder], ['backend', s.backend], ['dim', s.dim],
    ].filter(([, v]) => v !== undefined && v !== null);
    parts.forEach(([k, v], i) => {
      if (i) el.status.append(' · ');
      const item = document.createElement('span');
      item.className = 'stat';
      const b = document.createElement('b');
      b.textContent = String(v);
      item.append(b, ` ${k}`);
      el.status.append(item);
    });
    if (s.encoder_trained === false) {
      // A base encoder that was never fine-tuned ranks poorly: say so, and start in BM25.
      const warn = document.createElement('span');
      warn.className = 'untrained';
      warn.id = 'untrained';
      warn.textContent = 'untrained encoder: dense results are weak, BM25 is the default';
      el.status.append(' · ', warn);
    }
    el.status.dataset.ready = 'true';
    const preferred = searchParams().get('mode') || s.default_mode || currentMode();
    if (Array.isArray(s.modes) && s.modes.length) renderModes(s.modes, preferred);
  } catch (e) {
    el.status.textContent = `Index status unavailable: ${e.message}`;
    el.status.dataset.ready = 'error';
  }
}

// ---------- search view ----------

function searchParams() {
  const h = location.hash.replace(/^#\/?/, '');
  return new URLSearchParams(h.startsWith('?') ? h.slice(1) : '');
}

// The search's URL: query and mode, and the collection, filter and slider when set.
function hashFor(query, mode) {
  const p = new URLSearchParams({ q: query, mode });
  if (collection !== 'default') p.set('c', collection);
  const filter = currentFilter();
  if (filter) p.set('filter', JSON.stringify(filter));
  if (mode === 'hybrid' && alphaSet) p.set('alpha', el.alpha.value);
  return `#/?${p}`;
}

// ---------- collections, filters, slider ----------

async function loadCollections() {
  try {
    const r = await api('collections');
    const names = (Array.isArray(r.collections) ? r.collections : []).map((c) => c.name);
    if (!names.includes(collection)) names.push(collection);
    el.collection.replaceChildren(...names.map((n) => {
      const o = document.createElement('option');
      o.value = n;
      o.textContent = n;
      return o;
    }));
    el.collection.value = collection;
    el.collectionRow.hidden = names.length < 2;
  } catch {
    el.collectionRow.hidden = true;   // an older server: one database
  }
}

// One select per metadata key with sample values (GET fields); chosen values are ANDed.
async function loadFields(chosen = {}) {
  let fields = [];
  try {
    const r = await api(`${base()}fields`);
    fields = Array.isArray(r.fields) ? r.fields : [];
  } catch { /* an older server: no filters */ }
  el.filters.replaceChildren();
  for (const f of fields) {
    const values = Array.isArray(f.values) ? f.values : [];
    if (!values.length) continue;
    const label = document.createElement('label');
    const name = document.createElement('span');
    name.textContent = f.key;
    const select = document.createElement('select');
    select.dataset.key = f.key;
    const any = document.createElement('option');
    any.value = '';
    any.textContent = 'any';
    select.append(any);
    for (const v of values) {
      const o = document.createElement('option');
      o.value = JSON.stringify(v);
      o.textContent = String(v);
      select.append(o);
    }
    if (f.key in chosen) select.value = JSON.stringify(chosen[f.key]);
    label.append(name, select);
    el.filters.append(label);
  }
  el.filtersBox.hidden = el.filters.children.length === 0;
}

// The Qdrant-style filter of the chosen values, or null.
function currentFilter() {
  const must = [...el.filters.querySelectorAll('select')]
    .filter((s) => s.value !== '')
    .map((s) => ({ key: s.dataset.key, match: { value: JSON.parse(s.value) } }));
  return must.length ? { must } : null;
}

// The chosen values of a filter from the URL ({key: value}), for the selects.
function chosenOf(filterText) {
  const out = {};
  try {
    for (const c of JSON.parse(filterText || '{}').must || []) {
      if (c && c.match && 'value' in c.match) out[c.key] = c.match.value;
    }
  } catch { /* not ours: ignored */ }
  return out;
}

function showAlpha(mode) {
  el.alphaRow.hidden = mode !== 'hybrid';
  el.alphaValue.textContent = alphaSet ? Number(el.alpha.value).toFixed(2) : 'server default';
}

// `words`: the server's highlights for this text (stemmed matches); else the query's words.
function appendText(parent, text, query, words) {
  for (const { text: t, hit } of highlightSegments(text, query, words)) {
    if (hit) {
      const mark = document.createElement('mark');
      mark.textContent = t;
      parent.append(mark);
    } else {
      parent.append(t);
    }
  }
}

// What each score scale means, for the label's tooltip.
const SCALES = {
  cosine: 'cosine similarity of the query and the best passage (at most 1)',
  bm25: 'BM25 keyword score (unbounded; depends on the collection)',
  fused: 'fused score of the dense and BM25 rankings (compare within this list only)',
};

function renderHit(hit, rank, query, scoreKind) {
  const words = Array.isArray(hit.highlights) ? hit.highlights : undefined;
  const li = document.createElement('li');
  li.className = 'hit';
  const head = document.createElement('div');
  head.className = 'hit-head';
  const a = document.createElement('a');
  a.className = 'hit-title';
  const inCollection = collection === 'default' ? '' : `?${new URLSearchParams({ c: collection })}`;
  a.href = `#/doc/${encodeURIComponent(hit.id)}${inCollection}`;
  a.dataset.id = hit.id;
  if (hit.title) appendText(a, hit.title, query, words);
  else a.textContent = hit.id;
  const score = document.createElement('span');
  score.className = 'score';
  score.title = SCALES[scoreKind] || 'score';
  if (scoreKind) {
    const kind = document.createElement('span');
    kind.className = 'score-kind';
    kind.textContent = scoreKind;
    score.append(kind);
  }
  score.append(typeof hit.score === 'number' ? hit.score.toFixed(3) : String(hit.score ?? ''));
  head.append(a, score);
  const id = document.createElement('div');
  id.className = 'hit-id';
  id.textContent = `${rank}. ${hit.id}`;
  const snip = document.createElement('p');
  snip.className = 'snippet';
  appendText(snip, hit.snippet || '', query, words);
  li.append(head, id, snip);
  return li;
}

function renderSummary() {
  const n = shown.hits.length;
  el.summary.replaceChildren();
  if (!shown.query) return;
  if (!n) {
    el.summary.textContent = `No results for “${shown.query}” (${shown.mode}).`;
    return;
  }
  const count = document.createElement('b');
  // What is shown, and whether the server has more: never a total it does not know.
  count.textContent = `${n} result${n === 1 ? '' : 's'}${shown.more ? ', more available' : ''}`;
  const took = document.createElement('span');
  took.className = 'took';
  took.textContent = `${shown.took.toFixed(1)} ms`;
  const scale = shown.scoreKind && shown.scoreKind !== shown.mode ? ` · ${shown.scoreKind} scores` : '';
  el.summary.append(count, ` for “${shown.query}” · ${shown.mode}${scale}${shown.encoder ? ` · ${shown.encoder}` : ''} · `, took);
}

async function runSearch(query, mode, { append = false } = {}) {
  const ctrl = startRequest();
  const offset = append ? shown.next : 0;
  const qs = new URLSearchParams({ q: query, k: String(PAGE), mode, offset: String(offset) });
  const filter = currentFilter();
  if (filter) qs.set('filter', JSON.stringify(filter));
  if (mode === 'hybrid' && alphaSet) qs.set('alpha', el.alpha.value);
  el.more.disabled = true;
  try {
    const r = await api(`${base()}search?${qs}`, { signal: ctrl.signal });
    showError(null);
    if (!append) {
      Object.assign(shown, {
        key: hashFor(query, mode), query, mode, hits: [], ids: new Set(), next: 0, words: new Set(),
      });
      el.results.replaceChildren();
    }
    const page = Array.isArray(r.hits) ? r.hits : [];
    const firstNew = shown.hits.length;
    const hits = page.filter((h) => !shown.ids.has(h.id));
    shown.scoreKind = typeof r.score_kind === 'string' ? r.score_kind : '';
    for (const h of hits) {
      shown.ids.add(h.id);
      shown.hits.push(h);
      for (const w of h.highlights || []) shown.words.add(w);
      el.results.append(renderHit(h, shown.hits.length, query, shown.scoreKind));
    }
    shown.took = typeof r.took_ms === 'number' ? r.took_ms : 0;
    shown.encoder = r.encoder;
    shown.next = offset + page.length;
    // The server says whether more exist; an older one only lets a full page suggest it.
    shown.more = typeof r.more === 'boolean' ? r.more && hits.length > 0 : page.length >= PAGE && hits.length > 0;
    el.intro.hidden = true;
    el.more.hidden = !shown.more;
    el.end.hidden = shown.more || shown.hits.length === 0;
    if (!append) {
      el.weak.hidden = !r.warning;
      el.weak.textContent = r.warning || '';
    }
    renderSummary();
    if (append && hits.length) el.results.children[firstNew]?.querySelector('a')?.focus();
  } catch (e) {
    if (e.name === 'AbortError') return;
    showError(e, () => runSearch(query, mode, { append }));
    if (!append) {
      el.intro.hidden = true;
      shown.key = null;
      el.results.replaceChildren();
      el.summary.textContent = '';
      el.more.hidden = true;
      el.end.hidden = true;
      el.weak.hidden = true;
    }
  } finally {
    el.more.disabled = false;
    endRequest(ctrl);
  }
}

async function showSearchView() {
  const p = searchParams();
  const query = (p.get('q') || '').trim();
  const mode = p.get('mode') || currentMode();
  const wanted = p.get('c') || 'default';
  if (wanted !== collection) await switchCollection(wanted, chosenOf(p.get('filter')));
  else if (JSON.stringify(currentFilter()) !== JSON.stringify(chosenFilter(p.get('filter')))) {
    await loadFields(chosenOf(p.get('filter')));
  }
  alphaSet = p.has('alpha');
  if (alphaSet) el.alpha.value = p.get('alpha');
  showAlpha(mode);
  el.q.value = query;
  renderModes([...el.modes.querySelectorAll('input')].map((i) => i.value), mode);
  el.docView.hidden = true;
  el.searchView.hidden = false;
  document.title = query ? `${query} — engine search` : 'engine search';
  searchHash = location.hash || '#/';
  if (!query) {
    if (inflight) inflight.abort();
    Object.assign(shown, { key: null, query: '', hits: [], ids: new Set(), words: new Set() });
    el.results.replaceChildren();
    el.summary.textContent = '';
    el.more.hidden = true;
    el.end.hidden = true;
    el.weak.hidden = true;
    el.intro.hidden = false;
    showError(null);
    return;
  }
  if (shown.key === hashFor(query, mode)) {   // coming back: keep results and scroll
    requestAnimationFrame(() => window.scrollTo(0, searchScroll));
    return;
  }
  runSearch(query, mode);
}

// ---------- document view ----------

// The filter of the URL as the selects would build it (null when none).
function chosenFilter(filterText) {
  const must = Object.entries(chosenOf(filterText)).map(([key, value]) => ({ key, match: { value } }));
  return must.length ? { must } : null;
}

// Searches `name` from now on: its status line, modes and filters.
async function switchCollection(name, chosen = {}) {
  collection = name;
  if (![...el.collection.options].some((o) => o.value === name)) {
    const o = document.createElement('option');
    o.value = name;
    o.textContent = name;
    el.collection.append(o);
  }
  el.collection.value = name;
  shown.key = null;
  await Promise.all([loadStatus(), loadFields(chosen)]);
}

async function showDocView(id) {
  searchScroll = el.searchView.hidden ? searchScroll : window.scrollY;
  el.searchView.hidden = true;
  el.docView.hidden = false;
  el.back.href = searchHash;
  el.docTitle.textContent = 'Loading…';
  el.docId.textContent = id;
  el.docText.replaceChildren();
  el.docMetaSection.hidden = true;
  el.docView.removeAttribute('data-loaded');
  showError(null);
  window.scrollTo(0, 0);
  const ctrl = startRequest();
  try {
    const d = await api(`${base()}documents/${encodeURIComponent(id)}`, { signal: ctrl.signal });
    el.docTitle.textContent = d.title || d.id || id;
    el.docId.textContent = d.id || id;
    document.title = `${d.title || id} — engine search`;
    const query = new URLSearchParams(searchHash.replace(/^#\/?\??/, '')).get('q') || '';
    // The words the search's hits matched (stemmed by the server), else the query's own.
    const words = shown.query === query && shown.words.size ? [...shown.words] : undefined;
    // Paragraphs split on blank lines; single newlines kept by CSS (pre-line).
    for (const para of String(d.text || '').split(/\n\s*\n/)) {
      if (!para.trim()) continue;
      const p = document.createElement('p');
      appendText(p, para, query, words);
      el.docText.append(p);
    }
    const meta = d.metadata && typeof d.metadata === 'object' ? Object.entries(d.metadata) : [];
    el.docMeta.replaceChildren();
    for (const [k, v] of meta) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      const flatList = Array.isArray(v) && v.every((x) => x === null || typeof x !== 'object');
      dd.textContent = typeof v === 'string' ? v : flatList ? v.join(', ') : JSON.stringify(v);
      el.docMeta.append(dt, dd);
    }
    el.docMetaSection.hidden = meta.length === 0;
    el.docView.dataset.loaded = 'true';
    el.docTitle.focus({ preventScroll: true });
  } catch (e) {
    if (e.name === 'AbortError') return;
    el.docTitle.textContent = e.code === 'not_found' ? 'Document not found' : 'Could not load document';
    showError(e, e.code === 'not_found' ? undefined : () => showDocView(id));
  } finally {
    endRequest(ctrl);
  }
}

// ---------- routing + events ----------

function route() {
  const h = location.hash;
  if (h.startsWith('#/doc/')) {
    // The id is encodeURIComponent'd, so a '?' here starts the collection parameter.
    const [raw, params] = h.slice('#/doc/'.length).split('?');
    let id;
    try { id = decodeURIComponent(raw); } catch { id = raw; }
    const wanted = new URLSearchParams(params || '').get('c') || collection;
    if (wanted !== collection) switchCollection(wanted);
    showDocView(id);
  } else {
    cameFromSearch = false;
    showSearchView();
  }
}

el.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const query = el.q.value.trim();
  if (!query) { el.q.focus(); return; }
  const target = hashFor(query, currentMode());
  if (location.hash === target) runSearch(query, currentMode());   // same URL: no hashchange
  else location.hash = target;
});

el.modes.addEventListener('change', () => {
  showAlpha(currentMode());
  if (el.q.value.trim()) el.form.requestSubmit();
});

el.collection.addEventListener('change', async () => {
  await switchCollection(el.collection.value);
  if (el.q.value.trim()) el.form.requestSubmit();
});

el.filters.addEventListener('change', () => {
  if (el.q.value.trim()) el.form.requestSubmit();
});

el.alpha.addEventListener('input', () => {
  alphaSet = true;
  showAlpha(currentMode());
});

el.alpha.addEventListener('change', () => {
  if (el.q.value.trim()) el.form.requestSubmit();
});

el.more.addEventListener('click', () => {
  if (shown.query) runSearch(shown.query, shown.mode, { append: true });
});

el.results.addEventListener('click', (ev) => {
  if (ev.target.closest('a.hit-title')) cameFromSearch = true;
});

el.back.addEventListener('click', (ev) => {
  // Prefer a real "back" so the browser history stays tidy.
  if (cameFromSearch) { ev.preventDefault(); history.back(); }
});

document.addEventListener('keydown', (ev) => {
  if (ev.key === '/' && !ev.ctrlKey && !ev.metaKey && !ev.altKey
      && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || '')) {
    ev.preventDefault();
    el.q.focus();
    el.q.select();
  }
});

window.addEventListener('hashchange', route);

renderModes(DEFAULT_MODES, searchParams().get('mode') || DEFAULT_MODES[0]);
collection = searchParams().get('c') || 'default';
loadStatus();
loadCollections();
loadFields(chosenOf(searchParams().get('filter'))).then(route);
checkHealth();
