//! The OpenAPI document is committed (`docs/openapi.json`) and stays what the server
//! generates from its route table: a change to a route, a body or a code shows up in review as
//! a change to the document. `STRONGROOM_UPDATE_OPENAPI=1 cargo test -p strongroom-server
//! --test openapi` rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use std::path::Path;

fn committed() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_document_is_the_one_the_server_generates() {
    let generated = serde_json::to_string_pretty(&strongroom_server::openapi()).unwrap() + "\n";
    if std::env::var_os("STRONGROOM_UPDATE_OPENAPI").is_some() {
        std::fs::write(committed(), &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(committed()).unwrap_or_default();
    if on_disk != generated {
        let first = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()));
        panic!(
            "docs/openapi.json differs from the generated document from line {} on; \
             run STRONGROOM_UPDATE_OPENAPI=1 cargo test -p strongroom-server --test openapi \
             and commit it",
            first + 1
        );
    }
}

#[test]
fn the_document_describes_authentication_and_request_signing() {
    let doc = serde_json::to_value(strongroom_server::openapi()).unwrap();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["token"]["scheme"], "bearer");
    let signed = &schemes["signed"];
    assert_eq!((signed["type"].as_str(), signed["in"].as_str()), (Some("apiKey"), Some("header")));
    let text = signed["description"].as_str().unwrap();
    for needed in
        ["X-Strongroom-Timestamp", "X-Strongroom-Nonce", "HMAC-SHA256", "SHA-256 of the body"]
    {
        assert!(text.contains(needed), "{needed} not described: {text}");
    }
    // Every schema a reference names is in the document.
    let text = doc.to_string();
    for r in text.split("#/components/schemas/").skip(1) {
        let name: String = r.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        assert!(doc["components"]["schemas"].get(&name).is_some(), "dangling reference {name}");
    }
    // Every operation outside the public ones names how it is authenticated.
    let public = ["/v1/health", "/v1/ready", "/v1/auth/"];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if public.iter().any(|p| path.starts_with(p)) {
                continue;
            }
            assert!(op.get("security").is_some(), "{method} {path} names no security scheme");
        }
    }
}
