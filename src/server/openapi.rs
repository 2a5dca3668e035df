//! The OpenAPI 3.1 description of the API, written by hand (a derive macro crate would be the
//! only user). `tests/server.rs` checks that every route of [`super::routes`](mod@super::routes) is described.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn json_body(schema: &str) -> Value {
    json!({
        "required": true,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

/// The 429 every encoding route may answer.
fn busy_response() -> Value {
    let mut r = error_response(
        "Encoder busy: server.queue_capacity requests wait, or the work queued ahead would take over server.max_queue_seconds. Retry after the Retry-After header's seconds.",
    );
    r["headers"] = json!({ "Retry-After": { "description": "Seconds to wait before retrying.", "schema": { "type": "integer", "minimum": 1 } } });
    r
}

/// A JSON body of one of several schemas.
fn json_body_one_of(schemas: &[&str]) -> Value {
    let refs: Vec<Value> =
        schemas.iter().map(|s| json!({ "$ref": format!("#/components/schemas/{s}") })).collect();
    json!({ "required": true, "content": { "application/json": { "schema": { "oneOf": refs } } } })
}

fn id_param() -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": "Document id, percent-encoded (ids may contain '/', sent as %2F).",
        "schema": { "type": "string" }
    })
}

/// The OpenAPI document served at `/openapi.json`.
pub fn spec() -> Value {
    let search_responses = json!({
        "200": json_response("Hits, best first, one per document.", "SearchResponse"),
        "400": error_response("Malformed JSON (code invalid_json)."),
        "401": error_response("A read key is configured and no valid key was sent."),
        "413": error_response("Body over server.max_body_bytes (code payload_too_large)."),
        "415": error_response("POST body without Content-Type: application/json."),
        "422": error_response("Well-formed but invalid: JSON of the wrong shape, an empty query, k or offset out of range, an unknown or unavailable mode, a bad filter, a per-request setting out of range or given outside hybrid mode (limit differing from k, alpha, semantic_ratio, fusion, rrf_k, score_threshold, ef) (code invalid_request), a query over server.max_query_tokens (query_too_long)."),
        "429": busy_response(),
        "503": error_response("Model and index still loading.")
    });
    // Writes need the admin key once one is set; reads need a key once a read key is set,
    // embedding once any key is set (an empty requirement: open when no key is configured).
    let write_security = json!([{ "bearer": [] }, { "azureApiKey": [] }, { "apiKey": [] }]);
    let read_security = json!([{}, { "bearer": [] }, { "azureApiKey": [] }, { "apiKey": [] }]);
    let embed_errors = |ok: Value| {
        json!({
            "200": ok,
            "400": error_response("Malformed JSON (code invalid_json)."),
            "401": error_response("A key is configured and no valid key was sent."),
            "404": error_response("/v1/embeddings: model is not the served encoder's name (code model_not_found)."),
            "413": error_response("Body over server.max_body_bytes (code payload_too_large)."),
            "415": error_response("Body without Content-Type: application/json."),
            "422": error_response("Well-formed but invalid: JSON of the wrong shape (unknown fields, wrong types), an empty text list or text, token ids instead of text, an unsupported option value (dimensions, encoding_format, normalize: false, prompt_name, input_type, truncation_direction) (code invalid_request); more than server.max_embed_texts texts (too_many_texts) or server.max_request_tokens tokens (too_many_tokens), a query over server.max_query_tokens (query_too_long), a text over its kind's limit where it is refused rather than cut (text_too_long); on a --lexical-only database, any embedding (lexical_only)."),
            "429": busy_response(),
            "503": error_response("Model and index still loading.")
        })
    };
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "engine",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Dense retrieval with a Llama2Vec LLM encoder. Validation uses one status: 422 for a well-formed request that is invalid (wrong shape, values out of range, texts over their limits); 400 only for JSON that does not parse, 413 only for a body over server.max_body_bytes. Every error is {\"error\": {\"code\", \"message\", \"type\"}}, OpenAI's error shape (type: invalid_request_error, authentication_error, permission_error, rate_limit_error or server_error). Keys (engine serve --api-key, --read-api-key) travel as Authorization: Bearer KEY, api-key: KEY or x-api-key: KEY: writes need the admin key (401 without, 403 with the read key); /embed and /v1/embeddings need a key once any is set; searches and document reads need one once a read key is set; health, info, status, metrics and this document are open. Collections: the database of engine serve --db is the collection default; others are created with PUT /collections/{name}, and every database route (search, documents, fields, status, snapshots) is also served under /collections/{name}/ for each."
        },
        "paths": {
            "/search": {
                "post": {
                    "summary": "Search",
                    "security": read_security.clone(),
                    "requestBody": json_body("SearchRequest"),
                    "responses": search_responses.clone()
                },
                "get": {
                    "summary": "Search (query string form, used by the web UI)",
                    "security": read_security.clone(),
                    "parameters": [
                        { "name": "q", "in": "query", "required": true, "schema": { "type": "string", "minLength": 1, "pattern": "\\S" }, "description": "At most server.max_query_tokens tokens." },
                        { "name": "k", "in": "query", "schema": { "type": "integer", "minimum": 1 }, "description": "Default server.default_k, at most server.max_k." },
                        { "name": "mode", "in": "query", "schema": { "$ref": "#/components/schemas/Mode" } },
                        { "name": "offset", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                        { "name": "with_text", "in": "query", "schema": { "type": "boolean" } }
                    ],
                    "responses": search_responses
                }
            },
            "/documents": {
                "post": {
                    "summary": "Add or replace documents (embedded, indexed and durable before the reply)",
                    "security": write_security.clone(),
                    "requestBody": json_body("AddDocumentsRequest"),
                    "responses": {
                        "200": json_response("What was done.", "AddDocumentsResponse"),
                        "400": error_response("Malformed JSON (code invalid_json)."),
                        "422": error_response("Invalid documents: wrong shape, empty id, duplicate id, empty text and title (code invalid_request); more than server.max_documents_per_request documents (too_many_documents); a --lexical-only database (lexical_only)."),
                        "401": error_response("Missing or wrong API key."),
                        "403": error_response("The read key was sent: writes need the admin key (code forbidden); or the database folder cannot be written, so the server serves a read-only copy (code read_only)."),
                        "413": error_response("Body over server.max_body_bytes (code payload_too_large)."),
                        "415": error_response("Body without Content-Type: application/json."),
                        "429": busy_response(),
                        "503": error_response("Still loading.")
                    }
                }
            },
            "/documents/{id}": {
                "get": {
                    "summary": "One stored document",
                    "security": read_security.clone(),
                    "parameters": [id_param()],
                    "responses": {
                        "200": json_response("The document.", "Document"),
                        "401": error_response("A read key is configured and no valid key was sent."),
                        "404": error_response("No document with this id.")
                    }
                },
                "delete": {
                    "summary": "Delete a document and its passages",
                    "security": write_security.clone(),
                    "parameters": [id_param()],
                    "responses": {
                        "200": json_response("Deleted.", "DeleteResponse"),
                        "401": error_response("Missing or wrong API key."),
                        "403": error_response("The read key was sent: deletes need the admin key (code forbidden); or the database is read-only (code read_only)."),
                        "404": error_response("No document with this id.")
                    }
                }
            },
            "/embed": {
                "post": {
                    "summary": "Embed texts: the engine's shape ({texts, kind}) or text-embeddings-inference's ({inputs, prompt_name, normalize, truncate}, answered with a bare list of vectors)",
                    "security": read_security.clone(),
                    "requestBody": json_body_one_of(&["EmbedRequest", "TeiEmbedRequest"]),
                    "responses": embed_errors(json!({
                        "description": "One L2-normalised vector per text, in order: an EmbedResponse for the engine's shape, a bare [[number]] for TEI's.",
                        "content": { "application/json": { "schema": { "oneOf": [
                            { "$ref": "#/components/schemas/EmbedResponse" },
                            { "type": "array", "items": { "type": "array", "items": { "type": "number" } } }
                        ] } } }
                    }))
                }
            },
            "/healthz": { "get": { "summary": "Liveness", "responses": { "200": { "description": "The process is up." } } } },
            "/readyz": { "get": { "summary": "Readiness", "responses": {
                "200": { "description": "Model and index loaded." },
                "503": error_response("Still loading.")
            } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": {
                "description": "Text exposition format: engine_http_requests_total and engine_http_request_duration_seconds (by method, route, status), engine_encode_batch_size, engine_encode_duration_seconds, engine_queue_depth, engine_index_documents, engine_index_passages, engine_index_vectors.",
                "content": { "text/plain": { "schema": { "type": "string" } } }
            } } } },
            "/status": { "get": { "summary": "Index status for the web UI", "responses": {
                "200": json_response("Counts and encoder.", "Status"),
                "503": error_response("Still loading.")
            } } },
            "/openapi.json": { "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3.1 JSON." } } } }
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "x-api-key" },
                "azureApiKey": { "type": "apiKey", "in": "header", "name": "api-key" }
            },
            "schemas": {
                "Mode": { "type": "string", "enum": ["dense", "bm25", "hybrid"] },
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message", "type"], "properties": {
                        "code": { "type": "string", "examples": ["bad_request", "invalid_json", "invalid_request", "unsupported_media_type", "payload_too_large", "query_too_long", "text_too_long", "not_found", "model_not_found", "unauthorized", "forbidden", "read_only", "overloaded", "too_many_texts", "too_many_tokens", "too_many_documents", "collection_exists", "default_collection", "invalid_collection_name", "unknown_model", "invalid_model", "not_ready", "timeout", "internal"] },
                        "message": { "type": "string" },
                        "type": { "type": "string", "enum": ["invalid_request_error", "authentication_error", "permission_error", "rate_limit_error", "server_error"], "description": "OpenAI's error type for the status." }
                    } } }
                },
                "SearchRequest": {
                    "type": "object",
                    "anyOf": [{ "required": ["query"] }, { "required": ["vector"] }],
                    "properties": {
                        "query": { "type": "string", "minLength": 1, "pattern": "\\S", "description": "At most server.max_query_tokens tokens. Required, except in dense mode when vector is given." },
                        "vector": { "type": "array", "items": { "type": "number" }, "description": "A query embedding to search with instead of embedding query (dense and hybrid modes; hybrid still needs query for BM25): the database's dimension (/status dim) of finite numbers, not all zero; normalised by the server." },
                        "k": { "type": "integer", "minimum": 1, "description": "Default server.default_k, at most server.max_k." },
                        "with_text": { "type": "boolean", "default": false },
                        "mode": { "$ref": "#/components/schemas/Mode", "description": "Default: the server's default_mode (/status): dense for a trained encoder, else BM25." },
                        "offset": { "type": "integer", "minimum": 0, "default": 0, "description": "Hits to skip (paging)." }
                    }
                },
                "Hit": {
                    "type": "object", "required": ["id", "score", "title", "snippet", "highlights"],
                    "properties": {
                        "id": { "type": "string", "description": "Document id (accepted by /documents/{id})." },
                        "score": { "type": "number", "description": "On the scale the response's score_kind names." },
                        "title": { "type": "string" },
                        "snippet": { "type": "string", "description": "The server.snippet_chars characters of the best passage (BM25: of the document) where the query's words are densest, cut between words, with … where text was left out; the start of the passage when no query word occurs." },
                        "highlights": { "type": "array", "items": { "type": "string" }, "description": "Words of the title and snippet that match a query word as BM25 matches them (stemmed: rise matches Rises; stop words never), as written: mark these whole words, case-insensitively." },
                        "text": { "type": "string", "description": "Whole document text, only with with_text." }
                    }
                },
                "SearchResponse": {
                    "type": "object", "required": ["hits", "took_ms", "encoder", "mode", "score_kind", "offset", "more"],
                    "properties": {
                        "hits": { "type": "array", "items": { "$ref": "#/components/schemas/Hit" } },
                        "took_ms": { "type": "number" },
                        "encoder": { "type": "string", "description": "The model's name; none on a --lexical-only database." },
                        "mode": { "$ref": "#/components/schemas/Mode" },
                        "score_kind": { "type": "string", "enum": ["cosine", "bm25", "fused"], "description": "The scale of the scores: cosine similarity (dense, at most 1), BM25 (unbounded, depends on the corpus) or fused (hybrid: eval.fusion's RRF or convex combination, comparable within one list only)." },
                        "offset": { "type": "integer" },
                        "more": { "type": "boolean", "description": "Whether hits ranked below this page exist (ask again with offset + k)." },
                        "warning": { "type": "string", "description": "Present when the best cosine similarity of a dense or hybrid search is below server.weak_dense_score." }
                    }
                },
                "NewDocument": {
                    "type": "object", "required": ["id", "text"],
                    "properties": {
                        "id": { "type": "string", "minLength": 1, "pattern": "\\S" },
                        "title": { "type": "string", "default": "" },
                        "text": { "type": "string", "minLength": 1, "pattern": "\\S" },
                        "metadata": { "description": "Any JSON, stored as given." }
                    }
                },
                "AddDocumentsRequest": {
                    "type": "object", "required": ["documents"],
                    "properties": { "documents": { "type": "array", "minItems": 1, "description": "At most server.max_documents_per_request; ids unique.", "items": { "$ref": "#/components/schemas/NewDocument" } } }
                },
                "AddDocumentsResponse": {
                    "type": "object",
                    "properties": {
                        "added": { "type": "integer" }, "updated": { "type": "integer" },
                        "unchanged": { "type": "integer" }, "passages": { "type": "integer" },
                        "took_ms": { "type": "number" }
                    }
                },
                "Document": {
                    "type": "object", "required": ["id", "title", "text", "metadata"],
                    "properties": {
                        "id": { "type": "string" }, "title": { "type": "string" }, "text": { "type": "string" },
                        "metadata": {}, "passages": { "type": "integer" }
                    }
                },
                "DeleteResponse": { "type": "object", "properties": { "deleted": { "type": "string" } } },
                "EmbedRequest": {
                    "type": "object", "required": ["texts"],
                    "properties": {
                        "texts": { "type": "array", "minItems": 1, "description": "At most server.max_embed_texts.", "items": { "type": "string", "minLength": 1, "pattern": "\\S" } },
                        "kind": { "type": "string", "enum": ["query", "passage"], "default": "query" }
                    }
                },
                "EmbedResponse": {
                    "type": "object", "required": ["embeddings", "dim", "encoder"],
                    "properties": {
                        "embeddings": { "type": "array", "items": { "type": "array", "items": { "type": "number" } } },
                        "dim": { "type": "integer" }, "encoder": { "type": "string" },
                        "kind": { "type": "string", "enum": ["query", "passage"] }
                    }
                },
                "Status": {
                    "type": "object", "required": ["documents", "passages", "encoder", "backend", "dim", "modes"],
                    "properties": {
                        "documents": { "type": "integer" }, "passages": { "type": "integer" },
                        "encoder": { "type": "string" }, "backend": { "type": "string" },
                        "dim": { "type": "integer" },
                        "modes": { "type": "array", "items": { "$ref": "#/components/schemas/Mode" } },
                        "encoder_trained": { "type": "boolean", "description": "Whether the database's encoder was fine-tuned for retrieval." },
                        "default_mode": { "$ref": "#/components/schemas/Mode" }
                    }
                }
            }
        }
    });
    // Added in parts: one json! of the whole document exceeds the macro recursion limit.
    merge(&mut doc["paths"], compat_paths(&read_security, &embed_errors));
    merge(&mut doc["paths"], snapshot_paths(&write_security));
    merge(&mut doc["components"]["schemas"], compat_schemas());
    // The per-request retrieval settings, the same in the body and the query string.
    let settings = retrieval_settings();
    merge(&mut doc["components"]["schemas"]["SearchRequest"]["properties"], settings.clone());
    if let (Some(params), Value::Object(settings)) =
        (doc["paths"]["/search"]["get"]["parameters"].as_array_mut(), settings)
    {
        for (name, schema) in settings {
            let description = schema["description"].clone();
            params.push(json!({ "name": name, "in": "query", "schema": schema, "description": description }));
        }
    }
    if let Some(p) = doc["paths"]["/search"]["get"]["parameters"].as_array_mut() {
        p.push(json!({ "name": "filter", "in": "query", "schema": { "type": "string" }, "description": "The filter as JSON text (see SearchRequest.filter)." }));
        p.push(json!({ "name": "with_metadata", "in": "query", "schema": { "type": "boolean" } }));
    }
    merge(
        &mut doc["components"]["schemas"]["SearchRequest"]["properties"],
        json!({
            "filter": { "type": "object", "description": "Only documents whose metadata passes this filter, in Qdrant's filter JSON: {\"must\": [{\"key\": \"topic\", \"match\": {\"value\": \"ocean\"}}]}, with match.any, range, is_empty, should and must_not." },
            "with_metadata": { "type": "boolean", "default": false, "description": "Return each hit's metadata." }
        }),
    );
    document_management(&mut doc, &read_security, &write_security);
    collections(&mut doc, &read_security, &write_security);
    doc
}

fn name_param() -> Value {
    json!({
        "name": "name", "in": "path", "required": true,
        "description": "Collection name: 1 to 64 of A-Z a-z 0-9 _ -; default is the server's --db.",
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" }
    })
}

/// `GET /fields`, the collection routes, and every database route again under
/// `/collections/{name}` (see `server::collections`).
fn collections(doc: &mut Value, read_security: &Value, write_security: &Value) {
    doc["paths"]["/fields"] = json!({ "get": {
        "summary": "Metadata keys of the first 1000 documents (in id order), with up to 20 distinct sample values each: what the web UI offers as filters",
        "security": read_security,
        "responses": {
            "200": json_response("The keys found.", "Fields"),
            "401": error_response("A read key is configured and no valid key was sent."),
            "503": error_response("Still loading.")
        }
    } });
    let unknown = error_response("No collection with this name (code not_found).");
    let bad_name = error_response(
        "The name is not 1 to 64 of A-Z a-z 0-9 _ - (code invalid_collection_name).",
    );
    doc["paths"]["/collections"] = json!({ "get": {
        "summary": "Every collection (the default one first) with its counts and encoder",
        "security": read_security,
        "responses": {
            "200": json_response("The collections, and how many encoders are loaded (collections with the same encoder share one).", "CollectionList"),
            "401": error_response("A read key is configured and no valid key was sent."),
            "503": error_response("Still loading.")
        }
    } });
    doc["paths"]["/collections/{name}"] = json!({
        "get": {
            "summary": "One collection's counts and encoder",
            "security": read_security,
            "parameters": [name_param()],
            "responses": {
                "200": json_response("The collection.", "Collection"),
                "401": error_response("A read key is configured and no valid key was sent."),
                "404": unknown,
                "503": error_response("Still loading.")
            }
        },
        "put": {
            "summary": "Create an empty collection: a database folder named after it in server.collections_dir (default DB.collections/ beside --db), with the encoder the body names (default the server's, whose loaded model and batching queue it then shares)",
            "security": write_security,
            "parameters": [name_param()],
            "requestBody": { "required": false, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CreateCollectionRequest" } } } },
            "responses": {
                "201": json_response("Created.", "Collection"),
                "400": error_response("Malformed JSON (code invalid_json)."),
                "401": error_response("Missing or wrong API key."),
                "403": error_response("The read key was sent (code forbidden); or the server's database is read-only (code read_only)."),
                "409": error_response("A collection of this name exists (default always does), or a folder of this name that is not a served database is in the collections folder (code collection_exists)."),
                "413": error_response("Body over server.max_body_bytes (code payload_too_large)."),
                "415": error_response("A non-empty body without Content-Type: application/json."),
                "422": error_response("A bad name (invalid_collection_name); a model that is not a file or folder name in the models folder (unknown_model) or cannot be loaded (invalid_model); a bad pooling, template or backend, unknown fields (invalid_request)."),
                "503": error_response("Still loading.")
            }
        },
        "delete": {
            "summary": "Delete a collection: it stops being served at once and its folder is removed once requests using it finish (its snapshots stay)",
            "security": write_security,
            "parameters": [name_param()],
            "responses": {
                "200": { "description": "{\"deleted\": NAME}", "content": { "application/json": { "schema": { "type": "object", "properties": { "deleted": { "type": "string" } } } } } },
                "401": error_response("Missing or wrong API key."),
                "403": error_response("The read key was sent (code forbidden); or the server's or collection's folder is read-only (code read_only)."),
                "404": unknown.clone(),
                "409": error_response("default is the server's --db and cannot be deleted (code default_collection)."),
                "422": bad_name,
                "503": error_response("Still loading.")
            }
        }
    });
    for &(method, path) in crate::server::DATABASE_ROUTES {
        let mut op = doc["paths"][path][method].clone();
        op["summary"] = json!(format!(
            "{} (in the named collection; /collections/default{path} is {path})",
            op["summary"].as_str().unwrap_or_default()
        ));
        let mut params = vec![name_param()];
        if let Some(p) = op["parameters"].as_array() {
            params.extend(p.iter().cloned());
        }
        op["parameters"] = json!(params);
        op["responses"]["404"] = match op["responses"]["404"]["description"].as_str() {
            Some(d) => error_response(&format!("No collection with this name; or: {d}")),
            None => unknown.clone(),
        };
        doc["paths"][format!("{}{path}", crate::server::COLLECTION_PREFIX)][method] = op;
    }
    let collection = json!({
        "type": "object", "required": ["name", "default", "documents", "encoder", "modes"],
        "properties": {
            "name": { "type": "string" },
            "default": { "type": "boolean", "description": "Whether this is the server's --db (served at the plain routes too)." },
            "documents": { "type": "integer" }, "passages": { "type": "integer" },
            "encoder": { "type": "string", "description": "The model's file or folder name; none for a --lexical-only database." },
            "backend": { "type": "string" }, "dim": { "type": "integer" },
            "lexical_only": { "type": "boolean" },
            "modes": { "type": "array", "items": { "$ref": "#/components/schemas/Mode" } },
            "encoder_trained": { "type": "boolean" },
            "default_mode": { "$ref": "#/components/schemas/Mode" }
        }
    });
    merge(
        &mut doc["components"]["schemas"],
        json!({
            "Collection": collection,
            "CollectionList": {
                "type": "object", "required": ["collections", "encoders_loaded"],
                "properties": {
                    "collections": { "type": "array", "items": { "$ref": "#/components/schemas/Collection" } },
                    "encoders_loaded": { "type": "integer", "description": "Models loaded: collections whose encoders are the same (model, pooling, template, dtype, device, [encoder] settings) share one model and one batching queue." }
                }
            },
            "CreateCollectionRequest": {
                "type": "object",
                "description": "Every field defaults to the server's setting; an empty body is the server's encoder and backend.",
                "properties": {
                    "model": { "type": "string", "description": "A model file or folder name in the server's models folder (the folder holding model.path), never a path." },
                    "pooling": { "type": "string", "enum": ["llama2vec", "last", "mean"] },
                    "template": { "type": "string", "enum": ["llama2vec", "none"] },
                    "backend": { "type": "string", "enum": ["hnsw", "flat", "faiss"], "description": "faiss only when the server is built with it." }
                }
            },
            "Fields": {
                "type": "object", "required": ["fields", "scanned", "complete"],
                "properties": {
                    "fields": { "type": "array", "items": { "type": "object", "required": ["key", "kinds", "documents", "values", "more_values"], "properties": {
                        "key": { "type": "string", "description": "A top-level metadata key (a filter condition's key)." },
                        "kinds": { "type": "array", "items": { "type": "string", "enum": ["string", "number", "boolean", "array", "object", "null"] } },
                        "documents": { "type": "integer", "description": "Scanned documents that have it." },
                        "values": { "type": "array", "description": "Distinct strings, numbers and booleans seen (array items included), at most 20, in first-seen order: values for match.value / match.any." },
                        "more_values": { "type": "boolean", "description": "More distinct values were seen than listed." }
                    } } },
                    "scanned": { "type": "integer" },
                    "complete": { "type": "boolean", "description": "Whether every document was scanned (else the first 1000 in id order were)." }
                }
            }
        }),
    );
    let status = &mut doc["components"]["schemas"]["Status"]["properties"];
    status["collection"] = json!({ "type": "string", "description": "The collection described (default at /status)." });
    status["encoders_loaded"] = json!({ "type": "integer", "description": "Models this server has loaded (collections with the same encoder share one)." });
}

/// Search settings a request may override (`SearchRequest`, and `GET /search`'s query).
fn retrieval_settings() -> Value {
    json!({
        "limit": { "type": "integer", "minimum": 1, "description": "Alias of k; both given must be equal (else 422)." },
        "fusion": { "type": "string", "enum": ["rrf", "convex"], "description": "Hybrid mode only (else 422). Default: the server's eval.fusion." },
        "alpha": { "type": "number", "minimum": 0, "maximum": 1, "description": "Hybrid mode only: the dense weight of convex fusion (1 = dense order, 0 = BM25 order). Alone it means fusion convex; with fusion rrf it is refused (422). Default eval.hybrid_alpha." },
        "semantic_ratio": { "type": "number", "minimum": 0, "maximum": 1, "description": "Alias of alpha (Meilisearch's name); both given must be equal." },
        "rrf_k": { "type": "integer", "minimum": 1, "maximum": crate::fusion::RRF_K_MAX, "description": "Hybrid mode only: RRF's constant. Alone it means fusion rrf; with fusion convex it is refused (422). Default eval.rrf_k." },
        "score_threshold": { "type": "number", "description": "Drop hits scoring below it, in the mode's own scale: cosine for dense, BM25's for bm25, the fused score for hybrid. Must be finite." },
        "ef": { "type": "integer", "minimum": 1, "maximum": crate::index::MAX_SEARCH_EFFORT, "description": "HNSW search effort for this request (index.hnsw_ef_search otherwise); ignored by the flat (exact) and faiss backends." }
    })
}

/// `GET /documents`, `POST /documents/delete` and `PATCH /documents/{id}`.
fn document_management(doc: &mut Value, read_security: &Value, write_security: &Value) {
    doc["paths"]["/documents"]["get"] = json!({
        "summary": "Scroll the stored documents in id order, a page at a time",
        "security": read_security,
        "parameters": [
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": crate::server::routes::documents::PAGE_MAX, "default": 100 } },
            { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "next_cursor of the previous page (opaque). Every document present from the first page to the last is listed exactly once, whatever is written meanwhile." },
            { "name": "with_text", "in": "query", "schema": { "type": "boolean", "default": false } }
        ],
        "responses": {
            "200": json_response("A page of documents.", "DocumentPage"),
            "401": error_response("A read key is configured and no valid key was sent."),
            "422": error_response("limit out of range, a cursor this server did not return, unknown parameters (code invalid_request); a --lexical-only database (lexical_only)."),
            "503": error_response("Still loading.")
        }
    });
    let write_errors = json!({
        "401": error_response("Missing or wrong API key."),
        "403": error_response("The read key was sent: writes need the admin key (code forbidden); or the database is read-only (code read_only)."),
        "415": error_response("Body without Content-Type: application/json."),
        "400": error_response("Malformed JSON (code invalid_json)."),
        "413": error_response("Body over server.max_body_bytes (code payload_too_large)."),
        "503": error_response("Still loading.")
    });
    let mut delete = json!({
        "summary": "Delete many documents: by ids, by filter, or the listed ids that match the filter",
        "security": write_security,
        "requestBody": json_body("DeleteManyRequest"),
        "responses": {
            "200": json_response("How many documents were deleted (dense, BM25 and hybrid search no longer find them).", "DeleteManyResponse"),
            "422": error_response("Well-formed but invalid: JSON of the wrong shape, neither ids nor filter, a filter without a condition (it would delete everything), an invalid filter (code invalid_request); more than server.max_documents_per_request ids (too_many_documents); a --lexical-only database (lexical_only).")
        }
    });
    merge(&mut delete["responses"], write_errors.clone());
    doc["paths"]["/documents/delete"] = json!({ "post": delete });
    let mut patch = json!({
        "summary": "Replace a document's metadata without re-embedding it (visible to filters on return)",
        "security": write_security,
        "parameters": [id_param()],
        "requestBody": json_body("PatchDocumentRequest"),
        "responses": {
            "200": json_response("Updated.", "PatchDocumentResponse"),
            "404": error_response("No document with this id."),
            "422": error_response("Well-formed but invalid: JSON of the wrong shape (unknown fields, no metadata) (code invalid_request); a --lexical-only database (lexical_only).")
        }
    });
    merge(&mut patch["responses"], write_errors);
    doc["paths"]["/documents/{id}"]["patch"] = patch;
    // ?wait=false on the two bulk writes.
    let wait = json!({ "name": "wait", "in": "query", "schema": { "type": "boolean", "default": true }, "description": "false: check the input, answer 202 with a task id at once, and do the work in the background (poll GET /tasks/{id})." });
    let accepted =
        json_response("wait=false: the work started; poll GET /tasks/{task_id}.", "Task");
    for path in ["/documents", "/documents/delete"] {
        let op = &mut doc["paths"][path]["post"];
        op["parameters"] = json!([wait.clone()]);
        op["responses"]["202"] = accepted.clone();
    }
    doc["paths"]["/tasks/{id}"] = json!({ "get": {
        "summary": "A background write's status (tasks are kept in memory, the last 1000 finished ones, until a restart)",
        "security": write_security,
        "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1 } }],
        "responses": {
            "200": json_response("The task.", "Task"),
            "422": error_response("The id is not a number."),
            "401": error_response("Missing or wrong API key."),
            "403": error_response("The read key was sent: tasks need the admin key."),
            "404": error_response("No task with this id.")
        }
    } });
    merge(
        &mut doc["components"]["schemas"],
        json!({
            "DocumentPage": {
                "type": "object", "required": ["documents", "next_cursor"],
                "properties": {
                    "documents": { "type": "array", "items": { "type": "object", "required": ["id", "title", "metadata", "passages"], "properties": {
                        "id": { "type": "string" }, "title": { "type": "string" }, "metadata": {},
                        "passages": { "type": "integer" }, "text": { "type": "string", "description": "Only with with_text." }
                    } } },
                    "next_cursor": { "type": ["string", "null"], "description": "Cursor of the next page; null after the last." }
                }
            },
            "DeleteManyRequest": {
                "type": "object",
                "properties": {
                    "ids": { "type": "array", "items": { "type": "string" }, "description": "At most server.max_documents_per_request; unknown ids are skipped." },
                    "filter": { "type": "object", "description": "A filter as in SearchRequest.filter, with at least one condition; with ids, only the listed documents that match are deleted." }
                }
            },
            "DeleteManyResponse": { "type": "object", "required": ["deleted"], "properties": { "deleted": { "type": "integer" } } },
            "PatchDocumentRequest": {
                "type": "object", "required": ["metadata"],
                "properties": { "metadata": { "description": "Any JSON: replaces the stored metadata. Title and text change through POST /documents, which also stores a metadata-only change without re-embedding." } }
            },
            "Task": {
                "type": "object", "required": ["task_id", "kind", "status"],
                "properties": {
                    "task_id": { "type": "integer" },
                    "kind": { "type": "string", "enum": ["add_documents", "delete_documents"] },
                    "status": { "type": "string", "enum": ["processing", "succeeded", "failed"] },
                    "result": { "type": "object", "description": "succeeded: what the waiting request would have answered." },
                    "error": { "type": "object", "description": "failed: the error's {code, message, type}." }
                }
            },
            "PatchDocumentResponse": { "type": "object", "properties": { "updated": { "type": "string" } } }
        }),
    );
}

/// `POST /snapshots`.
fn snapshot_paths(write_security: &Value) -> Value {
    json!({
            "/snapshots": {
                "post": {
                    "summary": "Write a snapshot archive of the database (admin)",
                    "description": "A tar archive of the store (documents, passages, vectors, manifest), the ANN and BM25 indexes, written to server.snapshot_dir (default DB.snapshots/ beside the database) while the server keeps answering; writes wait only while the files are copied, so it holds every write acknowledged before the request. engine restore FILE --db NEWDIR restores it.",
                    "security": write_security,
                    "responses": {
                        "200": { "description": "Where the archive was written and what it holds: path, bytes, kind (dense or lexical_only), documents, passages, created_at, took_ms.", "content": { "application/json": { "schema": { "type": "object" } } } },
                        "401": error_response("Missing or wrong API key."),
                        "403": error_response("The read key was sent: snapshots need the admin key."),
                        "503": error_response("Still loading.")
                    }
                }
            }
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The OpenAI and text-embeddings-inference routes besides `/embed`.
fn compat_paths(read_security: &Value, embed_errors: &dyn Fn(Value) -> Value) -> Value {
    json!({
            "/v1/embeddings": {
                "post": {
                    "summary": "OpenAI-compatible embeddings (point an OpenAI client's base_url at http://HOST/v1)",
                    "security": read_security,
                    "requestBody": json_body("OpenAiEmbeddingsRequest"),
                    "responses": embed_errors(json_response("One vector per input, in order.", "OpenAiEmbeddingsResponse"))
                }
            },
            "/v1/models": { "get": { "summary": "OpenAI-compatible model list: the one served encoder", "responses": {
                "200": { "description": "{\"object\": \"list\", \"data\": [{\"id\": ENCODER, \"object\": \"model\", \"created\": 0, \"owned_by\": \"engine\"}]}", "content": { "application/json": { "schema": { "type": "object" } } } },
                "503": error_response("Still loading.")
            } } },
            "/info": { "get": { "summary": "text-embeddings-inference's model description", "responses": {
                "200": json_response("The served model and its limits.", "Info"),
                "503": error_response("Still loading.")
            } } },
            "/health": { "get": { "summary": "text-embeddings-inference's health check", "responses": {
                "200": { "description": "Model and index loaded." },
                "503": error_response("Still loading.")
            } } }
    })
}

/// Schemas of the OpenAI and text-embeddings-inference shapes.
fn compat_schemas() -> Value {
    json!({
                "TeiEmbedRequest": {
                    "type": "object", "required": ["inputs"],
                    "description": "text-embeddings-inference's /embed body; told from EmbedRequest by its inputs field.",
                    "properties": {
                        "inputs": { "oneOf": [ { "type": "string", "minLength": 1, "pattern": "\\S" }, { "type": "array", "minItems": 1, "items": { "type": "string", "minLength": 1, "pattern": "\\S" } } ], "description": "One text or a list (at most server.max_embed_texts). Token ids are refused (422)." },
                        "prompt_name": { "type": "string", "enum": ["query", "passage", "document"], "default": "query", "description": "The Llama2Vec template: query (NEXT) or passage (SELF; document is an alias)." },
                        "normalize": { "type": "boolean", "default": true, "description": "Vectors are always L2-normalised: false is refused (422)." },
                        "truncate": { "type": "boolean", "default": false, "description": "Cut texts over their kind's token limit (encoder.max_passage_tokens; server.max_query_tokens for queries) instead of refusing them (422)." },
                        "truncation_direction": { "type": "string", "enum": ["right", "Right"], "description": "Texts are cut at the end; left is refused (422)." }
                    }
                },
                "OpenAiEmbeddingsRequest": {
                    "type": "object", "required": ["input"],
                    "properties": {
                        "input": { "oneOf": [ { "type": "string", "minLength": 1, "pattern": "\\S" }, { "type": "array", "minItems": 1, "items": { "type": "string", "minLength": 1, "pattern": "\\S" } } ], "description": "One text or a list (at most server.max_embed_texts). Token-id arrays are refused (422). Texts over their kind's token limit are refused (422)." },
                        "model": { "type": "string", "description": "Optional; when sent, the served encoder's name (/v1/models, /info model_id, /status encoder: the model file or folder name), else 404 model_not_found." },
                        "encoding_format": { "type": "string", "enum": ["float", "base64"], "default": "float", "description": "base64: the little-endian f32 bytes of each vector, base64-encoded (what OpenAI's clients ask for by default)." },
                        "dimensions": { "type": "integer", "description": "Refused (422) unless equal to the model's dimension (/info dim)." },
                        "input_type": { "type": "string", "enum": ["passage", "document", "query"], "default": "passage", "description": "Extension (NVIDIA NIM's name; send it with the OpenAI client's extra_body): the Llama2Vec template." },
                        "user": { "type": "string", "description": "Accepted and ignored." }
                    }
                },
                "OpenAiEmbeddingsResponse": {
                    "type": "object", "required": ["object", "data", "model", "usage"],
                    "properties": {
                        "object": { "const": "list" },
                        "data": { "type": "array", "items": { "type": "object", "required": ["object", "index", "embedding"], "properties": {
                            "object": { "const": "embedding" },
                            "index": { "type": "integer" },
                            "embedding": { "oneOf": [ { "type": "array", "items": { "type": "number" } }, { "type": "string", "contentEncoding": "base64" } ] }
                        } } },
                        "model": { "type": "string" },
                        "usage": { "type": "object", "properties": {
                            "prompt_tokens": { "type": "integer", "description": "Tokens the encoder ran, prompt template included." },
                            "total_tokens": { "type": "integer" }
                        } }
                    }
                },
                "Info": {
                    "type": "object",
                    "description": "TEI's /info fields (model_sha, tokenization_workers, sha and docker_label are null), plus dim, prompts and template.",
                    "properties": {
                        "model_id": { "type": "string" }, "model_dtype": { "type": "string" },
                        "model_type": { "type": "object" },
                        "max_concurrent_requests": { "type": "integer" }, "max_input_length": { "type": "integer" },
                        "max_batch_tokens": { "type": "integer" }, "max_batch_requests": { "type": "integer" },
                        "max_client_batch_size": { "type": "integer" }, "auto_truncate": { "type": "boolean" },
                        "version": { "type": "string" }, "dim": { "type": "integer" },
                        "prompts": { "type": "array", "items": { "type": "string" } }, "template": { "type": "string" }
                    }
                }
    })
}
