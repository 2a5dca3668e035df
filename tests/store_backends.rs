//! One suite of store behaviour — put, update, delete, delete by filter, metadata updates,
//! scroll, reopen, and search in every mode with and without a filter — run on each backend:
//! the embedded store (sled + flat ANN + tantivy) and PostgreSQL (pgvector HNSW, and exact).
//! Then what only PostgreSQL promises: two handles (two servers) see each other's writes, a
//! read-only server refuses writes clearly, and a write that fails half-way leaves nothing.

mod common;

use common::pg;
use engine::encoder::{Embed, TextKind};
use engine::filter::Filter;
use engine::fusion::Fusion;
use engine::index::{AnnParams, Backend};
use engine::pipeline::testing::HashEmbedder;
use engine::pipeline::{content_hash, passage_text, Document};
use engine::search::{SearchIndex, SearchMode, SearchOptions};
use engine::store::postgres::PgStore;
use engine::store::{Database, DbOptions, NewDocument, NewPassage, Store};
use serde_json::{json, Value};

const DIM: usize = 64;

fn options(backend: Backend) -> DbOptions {
    DbOptions {
        backend,
        params: AnnParams::from_config(&engine::config::Config::default().index),
        chunk_tokens: 64,
        chunk_overlap: 8,
    }
}

/// A document of one passage (the whole text), embedded with the hash embedder.
fn doc(id: &str, title: &str, text: &str, metadata: Value) -> NewDocument {
    let e = HashEmbedder::new(DIM);
    let vector = e.embed(&[&passage_text(title, text)], TextKind::Passage).unwrap().remove(0);
    let d = Document { id: id.into(), title: title.into(), text: text.into(), metadata };
    NewDocument {
        hash: content_hash(&d),
        id: d.id,
        title: d.title,
        text: d.text,
        metadata: d.metadata,
        passages: vec![NewPassage { start: 0, end: text.len(), vector, cache_key: None }],
    }
}

fn corpus() -> Vec<NewDocument> {
    vec![
        doc(
            "bread",
            "Why bread rises",
            "Yeast ferments sugar and the carbon dioxide gas makes the dough rise.",
            json!({"topic": "food", "year": 2020}),
        ),
        doc(
            "tides",
            "Ocean tides",
            "The gravity of the moon pulls the oceans and causes the tides.",
            json!({"topic": "ocean", "year": 2021}),
        ),
        doc(
            "index",
            "Inverted index",
            "A search engine maps every word to the list of documents containing it.",
            json!({"topic": "tech"}),
        ),
        doc(
            "stars",
            "Stars",
            "A star fuses hydrogen into helium in its core until the fuel runs out.",
            json!({"topic": "space"}),
        ),
    ]
}

fn ids(index: &SearchIndex, mode: SearchMode, q: &str, filter: Option<&Filter>) -> Vec<String> {
    let e = HashEmbedder::new(DIM);
    let v = e.embed(&[q], TextKind::Query).unwrap().remove(0);
    let opts = SearchOptions {
        k: 4,
        fusion: Fusion::from_config(&engine::config::Config::default().eval).unwrap(),
        filter,
        score_threshold: None,
        ef: None,
    };
    let ranked = index.search_with(mode, q, Some(&v), &opts).unwrap();
    ranked.hits.into_iter().map(|h| h.id).collect()
}

fn topic(t: &str) -> Filter {
    Filter::parse(&json!({"must": [{"key": "topic", "match": {"value": t}}]})).unwrap()
}

/// The suite: `open` opens (creating on first call) the same store each time.
fn store_behaviour(backend: &str, open: &dyn Fn() -> SearchIndex) {
    let modes = [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid];
    {
        let index = open();
        assert_eq!(index.modes(), modes, "{backend}");
        assert_eq!(index.db().status().unwrap().documents, 0, "{backend}");
        index.put_documents(corpus()).unwrap();
        let db = index.db();
        let s = db.status().unwrap();
        assert_eq!((s.documents, s.passages), (4, 4), "{backend}");
        let tides = db.get_document("tides").unwrap().unwrap();
        assert_eq!(tides.title, "Ocean tides");
        assert_eq!(serde_json::from_str::<Value>(&tides.metadata).unwrap()["year"], 2021);
        assert_eq!(tides.passages.len(), 1);
        assert!(db.get_document("nope").unwrap().is_none());
        assert_eq!(db.document_ids().unwrap(), ["bread", "index", "stars", "tides"]);
        // Scrolling visits every document once, in id order.
        let (page, more) = db.scroll_documents(None, 2).unwrap();
        assert_eq!(page.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["bread", "index"]);
        assert!(more, "{backend}");
        let (page, more) = db.scroll_documents(Some("index"), 10).unwrap();
        assert_eq!(page.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["stars", "tides"]);
        assert!(!more, "{backend}");

        // Every mode puts the obvious document first; filters keep only matches.
        for mode in modes {
            assert_eq!(
                ids(&index, mode, "moon gravity tides", None)[0],
                "tides",
                "{backend} {mode:?}"
            );
            assert_eq!(ids(&index, mode, "dough yeast", None)[0], "bread", "{backend} {mode:?}");
            let food = ids(&index, mode, "moon gravity tides", Some(&topic("food")));
            assert!(food.iter().all(|id| id == "bread"), "{backend} {mode:?}: {food:?}");
        }
        assert_eq!(ids(&index, SearchMode::Dense, "moon", Some(&topic("food"))), ["bread"]);
        assert!(ids(&index, SearchMode::Bm25, "moon", Some(&topic("food"))).is_empty());

        // An update replaces text and passages; the old words no longer find it.
        index
            .put_documents(vec![doc(
                "tides",
                "Ocean tides",
                "Lunar pull lifts the seas twice a day.",
                json!({"topic": "ocean"}),
            )])
            .unwrap();
        let db = index.db();
        assert_eq!(db.status().unwrap().documents, 4, "{backend}");
        assert_eq!(
            db.get_document("tides").unwrap().unwrap().text,
            "Lunar pull lifts the seas twice a day."
        );
        assert_eq!(ids(&index, SearchMode::Bm25, "lunar seas", None), ["tides"], "{backend}");
        assert!(!ids(&index, SearchMode::Bm25, "gravity", None).contains(&"tides".to_string()));

        // Metadata alone changes; unknown ids are reported.
        let missing = index
            .update_metadata(&[
                ("bread".into(), json!({"topic": "baking"})),
                ("nope".into(), json!({})),
            ])
            .unwrap();
        assert_eq!(missing, ["nope"], "{backend}");
        assert_eq!(ids(&index, SearchMode::Dense, "x", Some(&topic("baking"))), ["bread"]);

        // Deletes are real: by id and by filter.
        assert_eq!(index.delete_documents(&["stars".into(), "nope".into()]).unwrap(), ["nope"]);
        assert!(index.db().get_document("stars").unwrap().is_none(), "{backend}");
        assert_eq!(index.delete_matching(&topic("baking"), None).unwrap(), ["bread"], "{backend}");
        let s = index.db().status().unwrap();
        assert_eq!((s.documents, s.passages), (2, 2), "{backend}");
        for mode in modes {
            let found = ids(&index, mode, "dough yeast star hydrogen", None);
            assert!(
                !found.iter().any(|id| id == "bread" || id == "stars"),
                "{backend} {mode:?}: deleted documents found: {found:?}"
            );
        }
    }
    // Reopened, everything acknowledged is there.
    let index = open();
    let s = index.db().status().unwrap();
    assert_eq!((s.documents, s.passages), (2, 2), "{backend} after reopen");
    assert_eq!(index.db().document_ids().unwrap(), ["index", "tides"]);
    for mode in modes {
        assert_eq!(ids(&index, mode, "lunar pull seas", None)[0], "tides", "{backend} {mode:?}");
    }
}

#[test]
fn the_embedded_store_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let fp = HashEmbedder::new(DIM).fingerprint();
    store_behaviour("embedded", &|| {
        let db = Database::create_or_open(dir.path(), &fp, &options(Backend::Flat)).unwrap();
        SearchIndex::open(db, true).unwrap()
    });
}

#[test]
fn postgres_passes_the_store_suite_with_hnsw_and_exact_search() {
    let fp = HashEmbedder::new(DIM).fingerprint();
    for backend in [Backend::Hnsw, Backend::Flat] {
        let Some(db) = pg::database(&format!("suite_{backend}")) else { return };
        store_behaviour(&format!("postgres {backend}"), &|| {
            SearchIndex::postgres(PgStore::create_or_open(&db.url, &fp, &options(backend)).unwrap())
        });
    }
}

/// Two handles on one database are two servers: what one acknowledges the other sees at once.
#[test]
fn postgres_handles_see_each_others_writes() {
    let Some(db) = pg::database("two_handles") else { return };
    let fp = HashEmbedder::new(DIM).fingerprint();
    let a = SearchIndex::postgres(
        PgStore::create_or_open(&db.url, &fp, &options(Backend::Hnsw)).unwrap(),
    );
    let b = SearchIndex::postgres(PgStore::open(&db.url, Some(&fp)).unwrap());
    a.put_documents(corpus()).unwrap();
    assert_eq!(b.db().status().unwrap().documents, 4);
    assert_eq!(ids(&b, SearchMode::Hybrid, "moon gravity tides", None)[0], "tides");
    b.delete_documents(&["tides".into()]).unwrap();
    assert!(a.db().get_document("tides").unwrap().is_none());
    assert!(!ids(&a, SearchMode::Dense, "moon gravity tides", None).contains(&"tides".into()));
    a.update_metadata(&[("bread".into(), json!({"topic": "baking"}))]).unwrap();
    assert_eq!(ids(&b, SearchMode::Bm25, "dough", Some(&topic("baking"))), ["bread"]);
    // Another encoder is refused on open.
    let other = HashEmbedder::new(DIM + 1).fingerprint();
    assert!(matches!(PgStore::open(&db.url, Some(&other)), Err(engine::Error::EncoderMismatch(_))));
}

/// A server on a read-only connection (as on a streaming replica, whose transactions are all
/// read-only) searches, and refuses writes with an error saying where writes go.
#[test]
fn postgres_read_only_servers_refuse_writes_clearly() {
    let Some(db) = pg::database("read_only") else { return };
    let fp = HashEmbedder::new(DIM).fingerprint();
    let primary = PgStore::create_or_open(&db.url, &fp, &options(Backend::Hnsw)).unwrap();
    primary.put_documents(corpus()).unwrap();
    let url = pg::with_options(&db.url, "-c default_transaction_read_only=on");
    let replica = SearchIndex::postgres(PgStore::open(&url, Some(&fp)).unwrap());
    assert!(replica.db().read_only());
    assert_eq!(ids(&replica, SearchMode::Hybrid, "moon gravity tides", None)[0], "tides");
    for err in [
        replica.put_documents(corpus()).unwrap_err(),
        replica.delete_documents(&["tides".into()]).unwrap_err(),
        replica.update_metadata(&[("tides".into(), json!({}))]).unwrap_err(),
    ] {
        assert!(matches!(err, engine::Error::StoreReadOnly { .. }), "{err}");
        assert!(err.to_string().contains("primary"), "{err}");
    }
    // The server's own refusal, past the handle's check (a replica promoted or demoted since).
    let mut c = pg::client(&url);
    let e = c.batch_execute("DELETE FROM engine_documents").unwrap_err();
    assert_eq!(e.code(), Some(&postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION));
    assert_eq!(primary.status().unwrap().documents, 4);
}

/// A real streaming replica (`pg_basebackup -R`): a server on it searches what the primary
/// wrote once it has replayed it, and refuses writes with an error naming the primary.
#[test]
fn postgres_a_streaming_replica_serves_reads_and_refuses_writes() {
    let Some(db) = pg::database("replica") else { return };
    let Some(replica_url) = pg::replica(&db) else { return };
    let fp = HashEmbedder::new(DIM).fingerprint();
    let primary = PgStore::create_or_open(&db.url, &fp, &options(Backend::Hnsw)).unwrap();
    primary.put_documents(corpus()).unwrap();
    // Asynchronous replication: wait for the replica to replay the writes.
    let started = std::time::Instant::now();
    let replayed = || {
        let mut c = postgres::Client::connect(&replica_url, postgres::NoTls).ok()?;
        let row = c.query_one("SELECT count(*) FROM engine_documents", &[]).ok()?;
        (row.get::<_, i64>(0) == 4).then_some(())
    };
    while replayed().is_none() {
        assert!(started.elapsed().as_secs() < 60, "the replica did not catch up in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let replica = SearchIndex::postgres(PgStore::open(&replica_url, Some(&fp)).unwrap());
    assert!(replica.db().read_only());
    for mode in [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid] {
        assert_eq!(ids(&replica, mode, "moon gravity tides", None)[0], "tides", "{mode:?}");
    }
    let err = replica.put_documents(corpus()).unwrap_err();
    assert!(matches!(err, engine::Error::StoreReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("primary"), "{err}");
    let err = PgStore::create_or_open(&replica_url, &fp, &options(Backend::Hnsw)).map(|_| ());
    assert!(err.is_ok(), "opening an existing store on a replica is a read: {err:?}");
}

/// A write is one transaction: a failure at the second passage of the second document (a
/// trigger raising, standing in for a crash or a lost connection) leaves neither the first
/// document of the write nor any part of the second's new version; the old version stays.
#[test]
fn postgres_a_write_that_fails_half_way_leaves_no_half_document() {
    let Some(db) = pg::database("atomic") else { return };
    let fp = HashEmbedder::new(DIM).fingerprint();
    let store = PgStore::create_or_open(&db.url, &fp, &options(Backend::Hnsw)).unwrap();
    store.put_documents(vec![doc("boom", "Old", "old text", json!({}))]).unwrap();
    db.client()
        .batch_execute(
            "CREATE FUNCTION fail_second() RETURNS trigger AS $$ BEGIN \
               IF NEW.doc_id = 'boom' AND NEW.ordinal = 1 THEN RAISE EXCEPTION 'disk on fire'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER fail_second BEFORE INSERT ON engine_passages \
               FOR EACH ROW EXECUTE FUNCTION fail_second();",
        )
        .unwrap();
    let mut boom = doc("boom", "New", "first half. second half. third half.", json!({}));
    let one = boom.passages[0].clone();
    boom.passages = [(0, 11), (12, 24), (25, 36)]
        .iter()
        .map(|&(start, end)| NewPassage { start, end, ..one.clone() })
        .collect();
    let err = store.put_documents(vec![doc("aaa", "First", "written first", json!({})), boom]);
    assert!(err.unwrap_err().to_string().contains("disk on fire"));
    assert!(store.get_document("aaa").unwrap().is_none(), "the write's first document stayed");
    let kept = store.get_document("boom").unwrap().unwrap();
    assert_eq!((kept.title.as_str(), kept.passages.len()), ("Old", 1));
    let s = store.status().unwrap();
    assert_eq!((s.documents, s.passages), (1, 1));
}
