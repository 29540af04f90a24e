//! The API against its own OpenAPI document, as an exchange's platform team would check it:
//! schemathesis (a Python package, `tools/interop`) generates requests from
//! `/v1/openapi.json` of a running `strongroom dev` and sends them signed in as each role
//! and as a customer, checking that nothing answers 5xx, that every status code, content
//! type, header and body is the one the document promises (every refusal an `ErrorBody` with
//! its stable code), and that requests the document says are invalid are refused. Only
//! "schema-valid requests are accepted" is left out: most operations need state the
//! generator cannot make (an existing withdrawal, a live passkey ceremony), which the other
//! tests cover.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code.
#![allow(clippy::disallowed_methods)] // A test of a real process waits on the real clock.

use std::process::Command;

mod common;
use common::*;

#[test]
fn every_role_and_a_customer_get_what_the_openapi_document_promises() {
    let Some(python) = interop_python("schemathesis") else { return };
    let st = python.with_file_name("schemathesis");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev = start_dev_with(&data, &["--no-signers"], &[]);

    // A token of every role, and a customer's session.
    let mut principals = vec![("operator".to_owned(), dev.token.clone())];
    for role in ["service", "auditor", "approver", "analyst", "admin"] {
        let (ok, out) = cli_with(
            &[
                "token",
                "create",
                "--name",
                role,
                "--role",
                role,
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &[],
        );
        assert!(ok, "{out}");
        let token = out.split_whitespace().find(|w| w.starts_with("srt_")).unwrap().to_owned();
        principals.push((role.to_owned(), token));
    }
    let (status, session) = call(
        &dev,
        "POST",
        "/v1/auth/register",
        None,
        Some(serde_json::json!({
            "email": "sam@customer.example", "password": "a passphrase of some length",
            "device_name": "laptop"})),
    );
    assert_eq!(status, 201, "{session}");
    principals.push(("customer".into(), session["token"].as_str().unwrap().to_owned()));

    let schema = format!("{}/v1/openapi.json", dev.url);
    let mut failed = Vec::new();
    for (who, token) in &principals {
        let started = std::time::Instant::now();
        let out = Command::new(&st)
            .args(["run", &schema, "--tls-verify", &dev.ca, "--no-color", "--seed", "20261207"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", "25"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let summary =
            text.lines().rev().find(|l| l.contains(" in ") && l.contains('=')).unwrap_or("");
        println!("schemathesis as {who}: {summary} ({:.1} s)", started.elapsed().as_secs_f64());
        if !out.status.success() {
            failed.push(format!("=== as {who}\n{text}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
