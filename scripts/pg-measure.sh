#!/usr/bin/env bash
# The PostgreSQL store against the embedded one on a BEIR dataset (docs/scale-out.md):
#   scripts/pg-measure.sh BEIR_DIR [QUERIES]
# indexes the corpus into both backends with the same encoder (load time), then on the first
# QUERIES (default 100) queries: whether exact dense top-10 is identical on both, recall@10 of
# pgvector's HNSW against the exact scan (documents, and passages via `engine check`), and
# tantivy's BM25 against PostgreSQL full text (nDCG@10 on the split `test`, top-10 overlap).
# ENCODER=hash (default) uses the test hash embedder at 576 dimensions (SmolLM2-135M's), so a
# run takes minutes and measures the stores, not retrieval quality; ENCODER=real uses the
# configured encoder (CONFIG, default configs/default.toml): hours for SciFact on 2 cores.
# FROM_DB=DIR skips the indexing: DIR (a flat database of BEIR_DIR's corpus, e.g. made by
# scripts/eval-encoder.sh) is the embedded side, and `engine copy` loads its vectors into
# PostgreSQL, so the real encoder's vectors are compared without embedding SciFact twice.
# LOAD=1 then serves each store (`engine serve`, the embedded one with an HNSW index built for
# it) and loads POST /search with wrk at 1 and 16 connections in dense mode (random query
# vectors, so the store is measured, not the encoder) and bm25 mode (scripts/load-test.sh;
# DURATION seconds per run, default 10).
# The PostgreSQL server is ENGINE_TEST_POSTGRES_URL's, else scripts/postgres.sh starts one.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: $0 BEIR_DIR [QUERIES]}
N=${2:-100}
E=${ENGINE_BIN:-${CARGO_TARGET_DIR:-target}/release/engine}
ADMIN=${ENGINE_TEST_POSTGRES_URL:-$(scripts/postgres.sh start)}
PSQL="$(dirname "$(find .venv-postgres -name psql -path '*pginstall/bin/*' | head -1)")/psql"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ "${ENCODER:-hash}" = hash ]; then
  export ENGINE_TEST_HASH_ENCODER=576
fi
CONFIG=${CONFIG:-configs/default.toml}
NAME=engine_measure
"$PSQL" -q "$ADMIN" -c "DROP DATABASE IF EXISTS $NAME WITH (FORCE)" -c "CREATE DATABASE $NAME"
URL="${ADMIN%/*}/$NAME"
head -n "$N" "$DATA/queries.jsonl" >"$WORK/queries.jsonl"
secs() { python3 -c 'import time; print(f"{time.time():.3f}")'; }
took() { python3 -c "print(f'{$2 - $1:.1f}')"; }

if [ -n "${FROM_DB:-}" ]; then
  # A database folder indexed earlier (flat backend): PostgreSQL gets its vectors by `engine copy`.
  ln -s "$(realpath "$FROM_DB")" "$WORK/emb"
  t0=$(secs)
  "$E" copy --db "$WORK/emb" --store "$URL" --backend hnsw >"$WORK/copy-pg.json"
  echo "load: postgres by engine copy of $FROM_DB (HNSW maintained per insert) $(took "$t0" "$(secs)") s"
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); print("  pg:", v["copied"], "documents,", v["passages"], "passages")' "$WORK/copy-pg.json"
else
  t0=$(secs)
  "$E" --config "$CONFIG" index "$DATA" --db "$WORK/emb" --backend flat >"$WORK/index-emb.json"
  t1=$(secs)
  "$E" --config "$CONFIG" index "$DATA" --store "$URL" --backend hnsw >"$WORK/index-pg.json"
  t2=$(secs)
  echo "load: embedded (flat, + BM25) $(took "$t0" "$t1") s; postgres (HNSW maintained per insert) $(took "$t1" "$t2") s"
  python3 - "$WORK" <<'PY'
import json, sys
for name in ("emb", "pg"):
    v = json.load(open(f"{sys.argv[1]}/index-{name}.json"))
    s = v["status"]
    print(f"  {name}: {s['documents']} documents, {s['passages']} passages, dim {s['dim']}, "
          f"indexing loop {v['report']['seconds']:.1f} s")
PY
fi

search() { "$E" search -k 10 --queries "$WORK/queries.jsonl" --format trec "$@"; }
search --db "$WORK/emb" --mode dense >"$WORK/emb-dense.trec"
search --store "$URL" --mode dense --exact >"$WORK/pg-exact.trec"
search --store "$URL" --mode dense >"$WORK/pg-hnsw.trec"
search --db "$WORK/emb" --mode bm25 >"$WORK/emb-bm25.trec"
search --store "$URL" --mode bm25 >"$WORK/pg-fts.trec"
python3 - "$WORK" <<'PY'
import sys
from collections import defaultdict
def run(name):
    r = defaultdict(list)
    for line in open(f"{sys.argv[1]}/{name}.trec"):
        q, _, d, rank, score, _ = line.split()
        r[q].append(d)
    return r
emb, exact, hnsw = run("emb-dense"), run("pg-exact"), run("pg-hnsw")
qs = sorted(set(emb) | set(exact))
same = sum(emb[q] == exact[q] for q in qs)
same_set = sum(set(emb[q]) == set(exact[q]) for q in qs)
print(f"exact dense top-10, embedded flat vs postgres exact: identical on {same}/{len(qs)} queries "
      f"(same set on {same_set})")
rec = sum(len(set(hnsw[q]) & set(exact[q])) / max(1, len(exact[q])) for q in qs) / len(qs)
print(f"recall@10 of pgvector HNSW vs exact (documents, {len(qs)} queries): {rec:.4f}")
bm, fts = run("emb-bm25"), run("pg-fts")
qs = sorted(set(bm) | set(fts))
ov = sum(len(set(bm[q]) & set(fts[q])) / 10 for q in qs) / len(qs)
top1 = sum(bool(bm[q]) and bool(fts[q]) and bm[q][0] == fts[q][0] for q in qs)
print(f"BM25 (tantivy) vs postgres full text: top-10 overlap {ov:.3f}, same top-1 on {top1}/{len(qs)}")
PY
# The values of the keys named, from the JSON object on stdin.
jget() { python3 -c 'import json, sys; v = json.load(sys.stdin); print(*(round(v[k], 4) for k in sys.argv[1:]))' "$@"; }
echo "recall@10 of pgvector HNSW vs exact (passages, 200 stored vectors as queries):" \
  "$("$E" check --store "$URL" --queries 200 | jget recall_at_10)"
echo "bm25 mode nDCG@10 recall@100, embedded (tantivy BM25): $("$E" eval --db "$WORK/emb" --dataset "$DATA" --mode bm25 | jget ndcg@10 recall@100)"
echo "bm25 mode nDCG@10 recall@100, postgres (ts_rank_cd): $("$E" eval --store "$URL" --dataset "$DATA" --mode bm25 | jget ndcg@10 recall@100)"
if [ -n "${LOAD:-}" ]; then
  if [ -n "${FROM_DB:-}" ]; then
    # The same vectors under an HNSW index: a copy of the folder, its ANN index rebuilt.
    cp -r "$(realpath "$FROM_DB")" "$WORK/emb-hnsw"
    "$E" index "$DATA" --db "$WORK/emb-hnsw" --backend hnsw >/dev/null
  else
    "$E" --config "$CONFIG" index "$DATA" --db "$WORK/emb-hnsw" --backend hnsw >/dev/null
  fi
  DIM=$("$E" info --db "$WORK/emb-hnsw" | python3 -c 'import json, sys; print(json.load(sys.stdin)["encoder"]["dim"])')
  for mode in dense bm25; do
    if [ "$mode" = dense ]; then export DIM; else unset DIM; fi
    echo "/search load, mode $mode, embedded (HNSW + tantivy):"
    MODE=$mode CONNECTIONS="1 16" DURATION=${DURATION:-10} CONFIG=$CONFIG scripts/load-test.sh "$WORK/emb-hnsw"
    echo "/search load, mode $mode, postgres (pgvector HNSW + full text):"
    STORE=$URL MODE=$mode CONNECTIONS="1 16" DURATION=${DURATION:-10} CONFIG=$CONFIG scripts/load-test.sh "$URL"
  done
fi
"$PSQL" -q "$ADMIN" -c "DROP DATABASE IF EXISTS $NAME WITH (FORCE)"
