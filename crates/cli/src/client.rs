//! A small client of the HTTPS API for the commands people run on their own machines
//! (`strongroom governance … --api`, `strongroom withdrawal approve`). Keys stay on the
//! machine: the server only ever receives signatures.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;
use strongroom_core::{Env, SystemEnv};

/// Where the API is and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The API's base URL, e.g. https://127.0.0.1:8443.
    #[arg(long = "api", env = "STRONGROOM_ADDR")]
    pub url: Option<String>,
    /// The CA certificate (PEM) the server's certificate chains to (the dev stack's is
    /// `.strongroom/dev/tls/ca.pem`).
    #[arg(long = "cacert", env = "STRONGROOM_CACERT")]
    pub ca: Option<PathBuf>,
    /// A file holding the API token (the dev stack writes `.strongroom/dev/operator.token`).
    #[arg(long = "token-file", env = "STRONGROOM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// The value at a JSON pointer, or null.
pub fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    v.pointer(pointer).unwrap_or(&NULL)
}

pub struct Api {
    base: String,
    client: reqwest::Client,
    token: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish_non_exhaustive()
    }
}

impl ApiArgs {
    pub fn connect(&self) -> anyhow::Result<Api> {
        let url = self.url.as_deref().context("set --api URL (or STRONGROOM_ADDR)")?;
        let ca = self.ca.as_ref().context("set --cacert FILE (or STRONGROOM_CACERT)")?;
        let token_file =
            self.token_file.as_ref().context("set --token-file FILE (or STRONGROOM_TOKEN_FILE)")?;
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let token = zeroize::Zeroizing::new(
            std::fs::read_to_string(token_file)
                .with_context(|| format!("reading {}", token_file.display()))?
                .trim()
                .to_owned(),
        );
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .build()?;
        Ok(Api { base: url.trim_end_matches('/').to_owned(), client, token })
    }
}

impl Api {
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// POST with a fresh idempotency key.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut key = [0u8; 16];
        SystemEnv::new().fill_random(&mut key);
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("idempotency-key", hex::encode(key))
            .json(body);
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.bearer_auth(self.token.as_str()).send().await.context("calling the API")?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let code = at(&value, "/error/code").as_str().unwrap_or("error");
            let message = at(&value, "/error/message").as_str().unwrap_or_default();
            anyhow::bail!("the API refused ({status}): {code}: {message}");
        }
        Ok(value)
    }
}
