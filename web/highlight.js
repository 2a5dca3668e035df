// Query-term highlighting, kept free of DOM globals so Node can unit-test it.
//
// Safety: server text is never parsed as HTML. `highlightHtml` escapes every
// piece of text before wrapping matches in <mark>; the page itself renders via
// `highlightSegments` + DOM text nodes, which cannot inject markup at all.

const WORD = /[\p{L}\p{N}]+/gu;

/** Distinct query terms of at least two characters, longest first. */
export function queryTerms(query) {
  const seen = new Set();
  for (const m of String(query ?? '').matchAll(WORD)) {
    const t = m[0].toLocaleLowerCase();
    if ([...t].length >= 2) seen.add(t);
  }
  return [...seen].sort((a, b) => b.length - a.length);
}

function termRegex(terms) {
  if (!terms.length) return null;
  const alt = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
  // Whole words only: no letter or digit directly before or after the match.
  return new RegExp(`(?<![\\p{L}\\p{N}])(?:${alt})(?![\\p{L}\\p{N}])`, 'giu');
}

/** Distinct words, lower-cased, longest first (the server's `highlights`). */
function wordTerms(words) {
  const seen = new Set(words.map((w) => String(w).toLocaleLowerCase()).filter((w) => w));
  return [...seen].sort((a, b) => b.length - a.length);
}

/**
 * Split `text` into [{text, hit}] runs; `hit` runs are whole words that match `words`
 * (the server's stemmed matches, as written) when given, else a query term.
 */
export function highlightSegments(text, query, words) {
  const s = String(text ?? '');
  const re = termRegex(Array.isArray(words) ? wordTerms(words) : queryTerms(query));
  if (!re) return s ? [{ text: s, hit: false }] : [];
  const out = [];
  let last = 0;
  for (const m of s.matchAll(re)) {
    if (m.index > last) out.push({ text: s.slice(last, m.index), hit: false });
    out.push({ text: m[0], hit: true });
    last = m.index + m[0].length;
  }
  if (last < s.length) out.push({ text: s.slice(last), hit: false });
  return out;
}

export function escapeHtml(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => (
    { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]
  ));
}

/** HTML string with every run escaped and matches wrapped in <mark>. */
export function highlightHtml(text, query, words) {
  return highlightSegments(text, query, words)
    .map(({ text: t, hit }) => (hit ? `<mark>${escapeHtml(t)}</mark>` : escapeHtml(t)))
    .join('');
}
