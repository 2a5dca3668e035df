// Browser test of the web UI (web/), driving Debian's Chromium through playwright-core.
//
//   ENGINE_URL=http://127.0.0.1:PORT EXPECT_QUERY='...' EXPECT_ID='...' \
//     node --test tests/browser/ui.test.mjs
//
// ENGINE_URL    base URL of a running `engine serve`; unset: start mock_server.mjs
//               (and also run the mock-only checks: errors, escaping, paging, modes)
// EXPECT_QUERY  query to type (required with ENGINE_URL)
// EXPECT_ID     document id that must be among its results (unset: the first hit)
// CHROMIUM      browser binary (default /usr/bin/chromium; the tests skip if it is
//               missing, or fail instead when REQUIRE_BROWSER=1)
// SNIPPET_QUERY a BM25 query whose match sits at the end of a long document (mock: built in)
// SNIPPET_ID    that document's id
// SNIPPET_WORD  the word its snippet must show highlighted (as written in the text)
// SCREENSHOT    if set, a PNG of the results page is written there
// COLLECTION    a collection besides default holding two documents COLLECTION/a and
//               COLLECTION/b, both matching the BM25 query "otters", with metadata shelf "a"
//               and "b" (unset: the picker test is skipped)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { startMock } from './mock_server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const NO_BROWSER = existsSync(CHROMIUM) ? false : `no browser at ${CHROMIUM} (set CHROMIUM)`;
if (NO_BROWSER && process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but ${NO_BROWSER}`);
const USE_MOCK = !process.env.ENGINE_URL;
const EXPECT_QUERY = process.env.EXPECT_QUERY || (USE_MOCK ? 'rust programming language' : '');
const EXPECT_ID = process.env.EXPECT_ID || (USE_MOCK ? 'wiki/Rust_(programming_language)' : '');
const SNIPPET_QUERY = process.env.SNIPPET_QUERY || (USE_MOCK ? 'why does the dough rise' : '');
const SNIPPET_ID = process.env.SNIPPET_ID || (USE_MOCK ? 'test/long' : '');
const SNIPPET_WORD = process.env.SNIPPET_WORD || (USE_MOCK ? 'rises' : '');
const WAIT = { timeout: 30_000 };

let base;
let mock;
let browser;

before(async () => {
  if (USE_MOCK) {
    mock = await startMock(0);
    base = mock.url;
  } else {
    base = process.env.ENGINE_URL.replace(/\/+$/, '');
    assert.ok(EXPECT_QUERY, 'EXPECT_QUERY must be set together with ENGINE_URL');
  }
  if (!NO_BROWSER) {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
  }
});

after(async () => {
  await browser?.close();
  await mock?.close();
});

async function json(path) {
  const res = await fetch(base + path);
  assert.equal(res.status, 200, `GET ${path} -> ${res.status}`);
  return res.json();
}

/** A fresh page that fails the test on any uncaught page error. */
async function openPage(t, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 820 }, ...opts });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  t.after(async () => {
    await context.close();
    assert.deepEqual(errors, [], 'uncaught errors in the page');
  });
  return page;
}

const flat = (s) => String(s).replace(/\s+/g, '');

// Runs web/highlight.js in the page (as served), so no Node ESM quirks apply.
test('highlighting escapes HTML and marks whole query words', { skip: NO_BROWSER }, async (t) => {
  const page = await openPage(t);
  await page.goto(`${base}/`);
  const r = await page.evaluate(async () => {
    const { queryTerms, highlightHtml: h } = await import('./highlight.js');
    return {
      terms: queryTerms('Rust a rust, BM25!'),
      whole: h('Rust is trusty; RUST.', 'rust'),
      escaped: h('<b>x</b> & amp', 'b amp'),
      script: h('<script>alert(1)</script>', 'script'),
      regex: h('a.b (x)', '.* ('),
      unicode: h('Élan vital', 'élan'),
    };
  });
  assert.deepEqual(r.terms, ['rust', 'bm25']);
  assert.equal(r.whole, '<mark>Rust</mark> is trusty; <mark>RUST</mark>.');
  assert.equal(r.escaped, '&lt;b&gt;x&lt;/b&gt; &amp; <mark>amp</mark>');
  assert.equal(r.script, '&lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt;');
  assert.equal(r.regex, 'a.b (x)');
  assert.equal(r.unicode, '<mark>Élan</mark> vital');
});

test('search, open a document, go back', { skip: NO_BROWSER, timeout: 120_000 }, async (t) => {
  const status = await json('/status');
  const page = await openPage(t);
  await page.goto(`${base}/`);

  // Index status line from /status.
  const statusLine = page.locator('#status[data-ready="true"]');
  await statusLine.waitFor(WAIT);
  const statusText = await statusLine.innerText();
  assert.match(statusText, /documents/);
  assert.ok(statusText.includes(status.documents.toLocaleString('en-US')), statusText);
  assert.ok(statusText.includes(status.encoder), statusText);
  assert.ok(statusText.includes(status.backend), statusText);
  if (Array.isArray(status.modes)) {
    assert.deepEqual(await page.locator('#modes input').evaluateAll((xs) => xs.map((x) => x.value)), status.modes);
  }
  // An untrained encoder is flagged, and the UI starts in the server's default mode (BM25).
  if (status.encoder_trained === false) {
    assert.ok(await page.locator('#untrained').isVisible(), 'untrained-encoder warning shown');
    assert.equal(await page.locator('#modes input:checked').getAttribute('value'), status.default_mode);
  }

  // Type the query, press Enter.
  const box = page.getByRole('searchbox', { name: 'Search query' });
  await box.fill(EXPECT_QUERY);
  await box.press('Enter');
  await page.locator('#results .hit').first().waitFor(WAIT);
  assert.match(await page.locator('#summary').innerText(), /\d+ results?\b.*\d+(\.\d+)? ms/);
  // Every score carries its scale, and the footer's dot says the server is up.
  const kinds = await page.locator('#results .score .score-kind').allInnerTexts();
  assert.ok(kinds.length > 0 && kinds.every((k) => ['cosine', 'bm25', 'fused'].includes(k)), String(kinds));
  await page.locator('#health[data-health="ok"]').waitFor(WAIT);
  assert.equal(new URLSearchParams(new URL(page.url()).hash.slice(2)).get('q'), EXPECT_QUERY);

  // The expected document is among the results, under its title.
  const ids = await page.locator('#results a.hit-title').evaluateAll((as) => as.map((a) => a.dataset.id));
  const id = EXPECT_ID || ids[0];
  const rank = ids.indexOf(id);
  assert.ok(rank >= 0, `expected ${id} among results for "${EXPECT_QUERY}", got ${JSON.stringify(ids)}`);
  const doc = await json(`/documents/${encodeURIComponent(id)}`);
  const link = page.locator('#results a.hit-title').nth(rank);
  assert.equal(flat(await link.innerText()), flat(doc.title || id));

  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });

  // Open it: the document page shows title, full text, and a back link.
  await link.click();
  await page.locator('#doc-view[data-loaded="true"]').waitFor(WAIT);
  assert.equal(new URL(page.url()).hash, `#/doc/${encodeURIComponent(id)}`);
  assert.ok(await page.locator('#search-view').isHidden());
  assert.equal(flat(await page.locator('#doc-title').innerText()), flat(doc.title || id));
  const shownText = flat(await page.locator('#doc-text').innerText());
  assert.ok(shownText.includes(flat(doc.text).slice(0, 200)), 'document text is shown');
  assert.ok(await page.getByRole('link', { name: /back to results/i }).isVisible());

  // Browser back returns to the same results, query still in the box.
  await page.goBack();
  await page.locator('#search-view').waitFor({ state: 'visible', ...WAIT });
  assert.ok(await page.locator('#doc-view').isHidden());
  assert.equal(await box.inputValue(), EXPECT_QUERY);
  assert.deepEqual(await page.locator('#results a.hit-title').evaluateAll((as) => as.map((a) => a.dataset.id)), ids);

  // Forward, then the in-page back link, also lands on the results.
  await page.goForward();
  await page.locator('#doc-view[data-loaded="true"]').waitFor(WAIT);
  await page.getByRole('link', { name: /back to results/i }).click();
  await page.locator('#results .hit').first().waitFor(WAIT);
  assert.equal(await box.inputValue(), EXPECT_QUERY);

  // A search URL opened directly shows the same results (links are shareable).
  const deep = await openPage(t);
  await deep.goto(page.url());
  await deep.locator('#results .hit').first().waitFor(WAIT);
  assert.ok((await deep.locator('#results a.hit-title').evaluateAll((as) => as.map((a) => a.dataset.id))).includes(id));
});

test('a snippet shows the match at the end of a long document, stem highlighted', { skip: NO_BROWSER || (!SNIPPET_QUERY && 'SNIPPET_QUERY not set'), timeout: 120_000 }, async (t) => {
  const page = await openPage(t);
  await page.goto(`${base}/#/?${new URLSearchParams({ q: SNIPPET_QUERY, mode: 'bm25' })}`);
  const hit = page.locator('#results .hit', { has: page.locator(`a.hit-title[data-id="${SNIPPET_ID}"]`) });
  await hit.waitFor(WAIT);
  const snippet = hit.locator('.snippet');
  const text = await snippet.innerText();
  assert.ok(text.startsWith('…'), `snippet centred on the match, not the start: ${text}`);
  assert.ok(text.includes(SNIPPET_WORD), text);
  const marks = (await snippet.locator('mark').allInnerTexts()).map((m) => m.toLowerCase());
  assert.ok(marks.includes(SNIPPET_WORD.toLowerCase()), `"${SNIPPET_WORD}" highlighted: ${marks}`);
  assert.ok(!marks.includes('the'), `stop words are not highlighted: ${marks}`);
  assert.equal(await hit.locator('.score-kind').innerText(), 'bm25');
});

test('collection picker, metadata filter and hybrid slider', { skip: NO_BROWSER || (!process.env.COLLECTION && 'COLLECTION not set'), timeout: 120_000 }, async (t) => {
  const name = process.env.COLLECTION;
  const page = await openPage(t);
  await page.goto(`${base}/`);
  const picker = page.locator('#collection');
  await page.locator(`#collection option[value="${name}"]`).waitFor({ state: 'attached', ...WAIT });
  assert.ok(await page.locator('#collection-row').isVisible());
  await picker.selectOption(name);
  const shelf = page.locator('#filters select[data-key="shelf"]');
  await shelf.waitFor(WAIT);
  const box = page.getByRole('searchbox', { name: 'Search query' });
  await page.locator('#modes label', { hasText: 'bm25' }).click();
  await box.fill('otters');
  await box.press('Enter');
  const ids = () => page.locator('#results a.hit-title').evaluateAll((as) => as.map((a) => a.dataset.id).sort());
  await page.waitForFunction(() => document.querySelectorAll('#results .hit').length === 2);
  assert.deepEqual(await ids(), [`${name}/a`, `${name}/b`]);
  assert.equal(new URLSearchParams(new URL(page.url()).hash.slice(2)).get('c'), name);
  // A filter value from the collection's fields narrows the results, and lives in the URL.
  await shelf.selectOption({ label: 'b' });
  await page.waitForFunction(() => document.querySelectorAll('#results .hit').length === 1);
  assert.deepEqual(await ids(), [`${name}/b`]);
  assert.ok(new URL(page.url()).hash.includes('filter='));
  // Hybrid shows the slider; moving it sends alpha.
  assert.ok(await page.locator('#alpha-row').isHidden());
  await page.locator('#modes label', { hasText: 'hybrid' }).click();
  await page.locator('#alpha-row').waitFor({ state: 'visible', ...WAIT });
  await page.locator('#alpha').fill('0.8');
  await page.waitForFunction(() => location.hash.includes('alpha=0.8'));
  await page.waitForFunction(() => document.querySelectorAll('#results .hit').length === 1);
  assert.equal(await page.locator('#alpha-value').innerText(), '0.80');
  // A hit opens in its collection.
  await page.locator('#results a.hit-title').first().click();
  await page.locator('#doc-view[data-loaded="true"]').waitFor(WAIT);
  assert.equal(await page.locator('#doc-id').innerText(), `${name}/b`);
});

test('mock only: errors, escaping, paging, modes', { skip: NO_BROWSER || (!USE_MOCK && 'needs the mock server'), timeout: 120_000 }, async (t) => {
  const page = await openPage(t);
  await page.goto(`${base}/#/?q=boom&mode=dense`);
  const alert = page.getByRole('alert');
  await alert.waitFor(WAIT);
  assert.match(await alert.innerText(), /500[\s\S]*internal[\s\S]*encoder exploded/);

  await page.goto(`${base}/#/?q=busy&mode=dense`);
  await page.getByRole('alert').filter({ hasText: '429' }).waitFor(WAIT);

  // Server text with markup is shown as text, and query words are highlighted.
  await page.goto(`${base}/#/?q=markup&mode=bm25`);
  await page.locator('#results .hit').first().waitFor(WAIT);
  const xss = page.locator('a.hit-title[data-id="test/xss"]');
  assert.match(await xss.innerText(), /<img src=x onerror=/);
  assert.equal(await page.locator('#results img, #results script, #results b').count(), 0);
  assert.ok(await page.locator('#results mark', { hasText: /^markup$/i }).count() > 0);
  assert.equal(await page.locator('input[name="mode"][value="bm25"]').isChecked(), true);
  await xss.click();
  await page.locator('#doc-view[data-loaded="true"]').waitFor(WAIT);
  assert.match(await page.locator('#doc-text').innerText(), /<script>window.__xss=1<\/script>/);
  assert.match(await page.locator('#doc-meta').innerText(), /<i>not html<\/i>/);
  assert.equal(await page.evaluate(() => window.__xss), undefined);

  // Switching mode re-runs the query and updates the URL.
  await page.goBack();
  await page.locator('#modes label', { hasText: 'hybrid' }).click();
  await page.waitForFunction(() => location.hash.includes('mode=hybrid'));
  await page.locator('#summary', { hasText: 'hybrid' }).waitFor(WAIT);

  // "More results" appends the next page without duplicates, then hides.
  await page.getByRole('searchbox').fill('the of and is');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#summary', { hasText: '10 results, more available' }).waitFor(WAIT);
  const more = page.getByRole('button', { name: 'More results' });
  assert.ok(await page.locator('#end').isHidden());
  await more.click();
  await page.waitForFunction(() => document.querySelectorAll('#results .hit').length > 10);
  const ids = await page.locator('#results a.hit-title').evaluateAll((as) => as.map((a) => a.dataset.id));
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(await more.isHidden());
  // The last page says so.
  assert.ok(await page.locator('#end', { hasText: 'End of results' }).isVisible());
  assert.doesNotMatch(await page.locator('#summary').innerText(), /more available/);

  // A weak dense match is flagged above the results.
  await page.goto(`${base}/#/?q=vague&mode=dense`);
  await page.locator('#weak', { hasText: 'weak dense match' }).waitFor(WAIT);

  // Unknown document: error shown, page still usable.
  await page.goto(`${base}/#/doc/${encodeURIComponent('no/such doc')}`);
  await page.getByRole('alert').filter({ hasText: 'not_found' }).waitFor(WAIT);
  assert.equal(await page.locator('#doc-title').innerText(), 'Document not found');
});

test('mock only: the health dot follows the server, and errors can be retried', { skip: NO_BROWSER || (!USE_MOCK && 'needs the mock server'), timeout: 120_000 }, async (t) => {
  const page = await openPage(t);
  await page.goto(`${base}/`);
  const dot = page.locator('#health');
  await page.locator('#health[data-health="ok"]').waitFor(WAIT);
  t.after(() => fetch(`${base}/__mock/up`, { method: 'POST' }));
  await fetch(`${base}/__mock/down`, { method: 'POST' });
  // The server is gone: a search fails with a Retry button and the dot turns red.
  await page.getByRole('searchbox').fill('rust');
  await page.getByRole('button', { name: 'Search' }).click();
  const retry = page.getByRole('alert').getByRole('button', { name: 'Retry' });
  await retry.waitFor(WAIT);
  await page.locator('#health[data-health="down"]').waitFor(WAIT);
  assert.match(await dot.getAttribute('title'), /unreachable/);
  // Back up: Retry runs the search again, and the dot turns green.
  await fetch(`${base}/__mock/up`, { method: 'POST' });
  await retry.click();
  await page.locator('#results .hit').first().waitFor(WAIT);
  assert.ok(await page.getByRole('alert').isHidden());
  await page.locator('#health[data-health="ok"]').waitFor(WAIT);
});
