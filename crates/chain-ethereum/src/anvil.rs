//! A real Ethereum dev node for tests and `strongroom dev`: anvil, installed from the npm
//! registry by `scripts/install-eth-tools`, started on a free port and stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where `scripts/install-eth-tools` puts the binary, relative to the repository root.
pub const INSTALLED_PATH: &str = "tools/eth/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// The anvil binary: `$STRONGROOM_ANVIL`, else the project's install in `root` or a folder
/// above it, else
/// `anvil` on the `PATH`.
pub fn find(root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRONGROOM_ANVIL") {
        return Some(PathBuf::from(p));
    }
    if let Some(installed) = root.ancestors().map(|d| d.join(INSTALLED_PATH)).find(|p| p.is_file())
    {
        return Some(installed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join("anvil")).find(|p| p.is_file())
    })
}

/// A running anvil. Killed when dropped.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    pub url: String,
    pub chain_id: u64,
}

impl Anvil {
    /// Start `binary` on a free loopback port with `chain_id` and any `extra` arguments
    /// (`--no-mining`, `--state FILE`, …) and wait until it listens.
    pub async fn start(binary: &Path, chain_id: u64, extra: &[&str]) -> std::io::Result<Anvil> {
        let mut child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", "0", "--chain-id", &chain_id.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let listening = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    return Ok(addr.to_owned());
                }
            }
            Err(std::io::Error::other("anvil exited before it listened"))
        };
        let addr = tokio::time::timeout(Duration::from_secs(20), listening)
            .await
            .map_err(|_| std::io::Error::other("anvil did not start within 20 s"))??;
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Anvil { child, url: format!("http://{addr}"), chain_id })
    }

    /// Stop the node now.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// For tests: a fresh anvil, or `None` (with a note on stderr) when none is installed.
/// With `STRONGROOM_REQUIRE_ANVIL=1` (as `scripts/test` sets) a missing anvil is an error
/// instead, so CI can never pass by skipping chain tests.
pub async fn for_tests(
    root: &Path,
    chain_id: u64,
    extra: &[&str],
) -> std::io::Result<Option<Anvil>> {
    match find(root) {
        Some(bin) => Anvil::start(&bin, chain_id, extra).await.map(Some),
        None if std::env::var_os("STRONGROOM_REQUIRE_ANVIL").is_some() => Err(std::io::Error::other(
            "STRONGROOM_REQUIRE_ANVIL is set but no anvil was found: run scripts/install-eth-tools",
        )),
        None => {
            tracing::warn!("no anvil installed (scripts/install-eth-tools): skipping a chain test");
            Ok(None)
        }
    }
}
