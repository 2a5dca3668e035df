// Tiny stand-in for `engine serve`, for developing web/ and its browser test.
// Serves ../../web at / and fake JSON for /status, /search, /documents/{id}.
//   node tests/browser/mock_server.mjs [port]      (default 8787; 0 = ephemeral)
// Special queries: "boom" -> 500 error JSON, "busy" -> 429, "vague" (dense) -> a weak-match
// warning. POST /__mock/down makes it drop every connection (a dead server) until
// POST /__mock/up. Snippets centre on the first query word, as the engine's do.

import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const WEB = fileURLToPath(new URL('../../web/', import.meta.url));
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon' };

export const DOCS = [
  ['wiki/Rust_(programming_language)', 'Rust (programming language)',
    'Rust is a general-purpose programming language emphasizing performance, type safety, and concurrency. It enforces memory safety without a garbage collector, using a borrow checker to validate references.\n\nRust was started by Graydon Hoare at Mozilla Research in 2006.',
    { source: 'wikipedia', lang: 'en', year: 2006 }],
  ['wiki/Dense_retrieval', 'Dense retrieval',
    'Dense retrieval encodes queries and passages as vectors with a neural encoder and ranks passages by inner product. Approximate nearest neighbour indexes such as HNSW make search over millions of vectors fast.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/Okapi_BM25', 'Okapi BM25',
    'BM25 is a bag-of-words ranking function used by search engines to estimate the relevance of documents to a given search query. It ranks documents by the query terms appearing in each document.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/Hierarchical_navigable_small_world', 'Hierarchical navigable small world',
    'HNSW is a graph-based approximate nearest neighbour search algorithm. Search starts at the top layer and greedily descends, giving logarithmic search complexity in practice.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/Large_language_model', 'Large language model',
    'A large language model is a language model trained with self-supervised learning on vast amounts of text. LLM embeddings can be adapted to dense retrieval, as in Llama2Vec.',
    { source: 'wikipedia', lang: 'en', tags: ['nlp', 'ml'] }],
  ['wiki/Inverted_index', 'Inverted index',
    'An inverted index maps content, such as words, to its locations in a set of documents. It is the central data structure of a full-text search engine and of BM25 ranking.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/Vector_database', 'Vector database',
    'A vector database stores embeddings and supports similarity search over them. Common backends include FAISS and HNSW graphs; hybrid search combines vector scores with lexical scores.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/Garbage_collection', 'Garbage collection (computer science)',
    'Garbage collection is a form of automatic memory management. Languages such as Rust avoid it, relying on ownership and borrowing instead.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/Concurrency', 'Concurrency (computer science)',
    'Concurrency is the ability of different parts of a program to be executed out of order or in partial order. Safe concurrency is a design goal of Rust and Go.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/Mozilla', 'Mozilla',
    'Mozilla is a free software community founded in 1998. Mozilla Research sponsored the early development of the Rust programming language and the Servo browser engine.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/Type_safety', 'Type safety',
    'Type safety is the extent to which a programming language discourages or prevents type errors. Rust, Haskell and ML are type-safe programming languages.',
    { source: 'wikipedia', lang: 'en' }],
  ['wiki/WebAssembly', 'WebAssembly',
    'WebAssembly is a portable binary instruction format. Rust, C and C++ can be compiled to WebAssembly to run in a browser at near-native speed.',
    { source: 'wikipedia', lang: 'en' }],
  ['test/long', 'Baking notes',
    `${'Flour, water and salt are weighed and mixed by hand. '.repeat(30)}At last the dough rises in the warm kitchen.`,
    { source: 'test' }],
  ['test/xss', 'Markup <img src=x onerror="window.__xss=1"> is shown as text',
    'This markup note contains <script>window.__xss=1</script> and <b>tags</b> that must be shown as text, never run.',
    { source: 'test', note: '<i>not html</i>' }],
].map(([id, title, text, metadata]) => ({ id, title, text, metadata }));

const terms = (s) => (s.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []);
const STOP = new Set(['a', 'an', 'and', 'the', 'of', 'is', 'in', 'to', 'it']);
// A crude stemmer: enough for "rise" to match "rises".
const stem = (w) => w.replace(/(es|s|ing|ed)$/, '').replace(/e$/, '');
const SNIPPET = 180;

// The engine's contract: the window around the first matching word, cut between words with
// … marks, and the matching words (stemmed, no stop words) as written.
function snippetOf(d, q) {
  const stems = new Set(q.filter((t) => !STOP.has(t)).map(stem));
  const match = (w) => stems.has(stem(w.toLowerCase()));
  const words = [...d.text.matchAll(/[\p{L}\p{N}]+/gu)];
  const first = words.find((m) => match(m[0]));
  let start = 0;
  if (first && d.text.length > SNIPPET) {
    start = Math.max(0, Math.min(first.index - SNIPPET / 2, d.text.length - SNIPPET));
    while (start > 0 && start < first.index && !/\s/.test(d.text[start - 1])) start += 1;
  }
  let text = d.text.slice(start, start + SNIPPET).trim();
  if (start > 0) text = `…${text}`;
  if (start + SNIPPET < d.text.length) text = `${text}…`;
  const seen = new Map();
  for (const m of `${d.title} ${text}`.matchAll(/[\p{L}\p{N}]+/gu)) {
    if (match(m[0]) && !seen.has(m[0].toLowerCase())) seen.set(m[0].toLowerCase(), m[0]);
  }
  return { snippet: text, highlights: [...seen.values()] };
}

function search(query, k, mode, offset) {
  const q = terms(query);
  const scale = { dense: 0.1, bm25: 3, hybrid: 0.05 }[mode] ?? 1;
  const scored = DOCS.map((d) => {
    const words = terms(`${d.title} ${d.text}`);
    const s = q.reduce((acc, t) => acc + words.filter((w) => w === t).length, 0);
    return { d, s };
  }).filter((x) => x.s > 0).sort((a, b) => b.s - a.s || a.d.id.localeCompare(b.d.id));
  const hits = scored.slice(offset, offset + k).map(({ d, s }) => ({
    id: d.id, score: s * scale + (mode === 'dense' ? 0.5 : 0), title: d.title, ...snippetOf(d, q),
  }));
  return { hits, more: scored.length > offset + k };
}

function send(res, status, body, type = 'application/json') {
  const data = type === 'application/json' ? JSON.stringify(body) : body;
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(data);
}
const fail = (res, status, code, message) => send(res, status, { error: { code, message } });

function handleSearch(res, { query, k, mode, offset }) {
  const t0 = process.hrtime.bigint();
  if (!query || !String(query).trim()) return fail(res, 400, 'bad_request', 'query must not be empty');
  if (query === 'boom') return fail(res, 500, 'internal', 'the encoder exploded (mock)');
  if (query === 'busy') return fail(res, 429, 'overloaded', 'too many concurrent searches');
  mode = mode || 'dense';
  if (!['dense', 'bm25', 'hybrid'].includes(mode)) return fail(res, 400, 'bad_request', `unknown mode ${mode}`);
  const { hits, more } = search(String(query), Math.min(Number(k) || 10, 100), mode, Number(offset) || 0);
  const took_ms = Number(process.hrtime.bigint() - t0) / 1e6 + 3.2;
  const score_kind = { dense: 'cosine', bm25: 'bm25', hybrid: 'fused' }[mode];
  const warning = mode === 'dense' && query === 'vague'
    ? 'weak dense match: the closest passage has cosine 0.213, below 0.5 (server.weak_dense_score)' : undefined;
  send(res, 200, { hits, took_ms, encoder: 'mock-llama2vec-tiny', mode, score_kind, more, warning });
}

let down = false;

async function handler(req, res) {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (p === '/__mock/down' || p === '/__mock/up') {
    down = p === '/__mock/down';
    return send(res, 200, { down });
  }
  if (down) return req.socket.destroy();
  if (p === '/readyz') return send(res, 200, { status: 'ready' });
  if (p === '/status') {
    return send(res, 200, { documents: DOCS.length, passages: DOCS.length * 3, encoder: 'mock-llama2vec-tiny',
      backend: 'hnsw', dim: 64, modes: ['dense', 'bm25', 'hybrid'] });
  }
  if (p === '/search' && req.method === 'GET') {
    const s = url.searchParams;
    return handleSearch(res, { query: s.get('q'), k: s.get('k'), mode: s.get('mode'), offset: s.get('offset') });
  }
  if (p === '/search' && req.method === 'POST') {
    let body = '';
    for await (const chunk of req) body += chunk;
    try { body = JSON.parse(body); } catch { return fail(res, 400, 'bad_request', 'invalid JSON'); }
    return handleSearch(res, { query: body.query, k: body.k, mode: body.mode, offset: body.offset });
  }
  if (p.startsWith('/documents/')) {
    const id = decodeURIComponent(p.slice('/documents/'.length));
    const d = DOCS.find((x) => x.id === id);
    return d ? send(res, 200, d) : fail(res, 404, 'not_found', `no document with id ${id}`);
  }
  if (req.method !== 'GET') return fail(res, 405, 'method_not_allowed', 'method not allowed');
  const rel = p === '/' ? 'index.html' : decodeURIComponent(p.slice(1));
  const file = path.join(WEB, rel);
  if (!file.startsWith(WEB)) return fail(res, 404, 'not_found', 'not found');
  try {
    return send(res, 200, await readFile(file), TYPES[path.extname(file)] || 'application/octet-stream');
  } catch {
    return fail(res, 404, 'not_found', `no route ${p}`);
  }
}

/** Start the mock; resolves to { url, close }. */
export function startMock(port = 0, host = '127.0.0.1') {
  const server = http.createServer((req, res) => {
    handler(req, res).catch((e) => fail(res, 500, 'internal', String(e)));
  });
  return new Promise((resolve) => server.listen(port, host, () => {
    const { port: p } = server.address();
    resolve({ url: `http://${host}:${p}`, close: () => new Promise((r) => server.close(r)) });
  }));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const { url } = await startMock(Number(process.argv[2] ?? 8787));
  console.log(`mock engine at ${url}/`);
}
