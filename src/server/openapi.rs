//! The OpenAPI 3.1 description of the API, written by hand (a derive macro crate would be the
//! only user). `tests/server.rs` checks that every route in [`super::ROUTES`] is described.

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
        "400": error_response("Invalid input: empty query, k out of range, unknown or unavailable mode, malformed JSON."),
        "413": error_response("Query longer than server.max_query_tokens, or body over server.max_body_bytes."),
        "415": error_response("POST body without Content-Type: application/json."),
        "422": error_response("JSON of the wrong shape."),
        "429": busy_response(),
        "503": error_response("Model and index still loading.")
    });
    let write_security = json!([{ "bearer": [] }, { "apiKey": [] }]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "engine",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Dense retrieval with a Llama2Vec LLM encoder. Every error is {\"error\": {\"code\", \"message\"}}."
        },
        "paths": {
            "/search": {
                "post": {
                    "summary": "Search",
                    "requestBody": json_body("SearchRequest"),
                    "responses": search_responses.clone()
                },
                "get": {
                    "summary": "Search (query string form, used by the web UI)",
                    "parameters": [
                        { "name": "q", "in": "query", "required": true, "schema": { "type": "string" } },
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
                        "400": error_response("Invalid documents (empty id, duplicate id, empty text and title)."),
                        "401": error_response("Missing or wrong API key."),
                        "413": error_response("More than server.max_documents_per_request documents, or body too large."),
                        "429": busy_response(),
                        "503": error_response("Still loading.")
                    }
                }
            },
            "/documents/{id}": {
                "get": {
                    "summary": "One stored document",
                    "parameters": [id_param()],
                    "responses": {
                        "200": json_response("The document.", "Document"),
                        "404": error_response("No document with this id.")
                    }
                },
                "delete": {
                    "summary": "Delete a document and its passages",
                    "security": write_security,
                    "parameters": [id_param()],
                    "responses": {
                        "200": json_response("Deleted.", "DeleteResponse"),
                        "401": error_response("Missing or wrong API key."),
                        "404": error_response("No document with this id.")
                    }
                }
            },
            "/embed": {
                "post": {
                    "summary": "Embed texts (like text-embeddings-inference's /embed); needs the API key when one is set",
                    "security": write_security.clone(),
                    "requestBody": json_body("EmbedRequest"),
                    "responses": {
                        "200": json_response("One L2-normalised vector per text, in order.", "EmbedResponse"),
                        "400": error_response("Empty text list or empty text."),
                        "401": error_response("Missing or wrong API key."),
                        "413": error_response("More than server.max_embed_texts texts or server.max_request_tokens tokens, or a query over server.max_query_tokens."),
                        "415": error_response("Body without Content-Type: application/json."),
                        "422": error_response("JSON of the wrong shape."),
                        "429": busy_response(),
                        "503": error_response("Model and index still loading.")
                    }
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
                "apiKey": { "type": "apiKey", "in": "header", "name": "x-api-key" }
            },
            "schemas": {
                "Mode": { "type": "string", "enum": ["dense", "bm25", "hybrid"] },
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string", "examples": ["bad_request", "invalid_json", "unsupported_media_type", "payload_too_large", "query_too_long", "not_found", "unauthorized", "overloaded", "too_many_texts", "too_many_tokens", "too_many_documents", "not_ready", "internal"] },
                        "message": { "type": "string" }
                    } } }
                },
                "SearchRequest": {
                    "type": "object", "required": ["query"],
                    "properties": {
                        "query": { "type": "string", "minLength": 1, "pattern": "\\S", "description": "At most server.max_query_tokens tokens." },
                        "k": { "type": "integer", "minimum": 1, "description": "Default server.default_k, at most server.max_k." },
                        "with_text": { "type": "boolean", "default": false },
                        "mode": { "$ref": "#/components/schemas/Mode", "description": "Default: the server's default_mode (/status): dense for a trained encoder, else BM25." },
                        "offset": { "type": "integer", "minimum": 0, "default": 0, "description": "Hits to skip (paging)." }
                    }
                },
                "Hit": {
                    "type": "object", "required": ["id", "score", "title", "snippet"],
                    "properties": {
                        "id": { "type": "string", "description": "Document id (accepted by /documents/{id})." },
                        "score": { "type": "number" },
                        "title": { "type": "string" },
                        "snippet": { "type": "string", "description": "Start of the best passage (server.snippet_chars)." },
                        "text": { "type": "string", "description": "Whole document text, only with with_text." }
                    }
                },
                "SearchResponse": {
                    "type": "object", "required": ["hits", "took_ms", "encoder", "mode", "offset"],
                    "properties": {
                        "hits": { "type": "array", "items": { "$ref": "#/components/schemas/Hit" } },
                        "took_ms": { "type": "number" },
                        "encoder": { "type": "string" },
                        "mode": { "$ref": "#/components/schemas/Mode" },
                        "offset": { "type": "integer" }
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
    })
}
