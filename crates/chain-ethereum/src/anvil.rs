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

/// A running anvil. Stopped when dropped, and also when this process dies, however it
/// dies: anvil runs under a small `sh` watcher that kills it once our end of its stdin
/// closes (a killed parent leaves no orphaned node behind).
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    watch: Option<tokio::process::ChildStdin>,
    pub url: String,
    pub chain_id: u64,
}

/// Runs anvil ("$0" with "$@") in the background, waits for stdin to close, then stops it.
const WATCHER: &str = r#""$0" "$@" </dev/null & a=$!; read -r _; kill "$a" 2>/dev/null; wait "$a""#;

impl Anvil {
    /// Start `binary` on a free loopback port with `chain_id` and any `extra` arguments
    /// (`--no-mining`, `--state FILE`, …) and wait until it listens.
    pub async fn start(binary: &Path, chain_id: u64, extra: &[&str]) -> std::io::Result<Anvil> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHER)
            .arg(binary)
            .args(["--host", "127.0.0.1", "--port", "0", "--chain-id", &chain_id.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let watch = child.stdin.take();
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
        let addr = match tokio::time::timeout(Duration::from_secs(20), listening).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("anvil did not start within 20 s")),
        };
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Anvil { child, watch, url: format!("http://{addr}"), chain_id })
    }

    /// Stop the node and wait until it has exited.
    pub async fn stop(mut self) {
        self.watch.take();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // Closing the watcher's stdin makes it stop anvil.
        self.watch.take();
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

/// The test ERC-20 (`tools/eth/contracts/TestToken.sol`), built by `scripts/build-test-token`.
pub const TEST_TOKEN_JSON: &str = include_str!("../fixtures/TestToken.json");

alloy_sol_types::sol! {
    function mint(address to, uint256 value) external;
}

/// Deploy the test ERC-20 from `from` (an account the node unlocks, e.g. anvil's first)
/// and return its address.
pub async fn deploy_test_token(
    rpc: &crate::rpc::EthRpc,
    from: &str,
    name: &str,
    symbol: &str,
    decimals: u8,
) -> Result<strongroom_units::Address, strongroom_chain::ClientError> {
    use alloy_sol_types::SolValue;
    let fail = |m: String| strongroom_chain::ClientError { message: m, retryable: false };
    let artifact: serde_json::Value =
        serde_json::from_str(TEST_TOKEN_JSON).map_err(|e| fail(format!("token artifact: {e}")))?;
    let code = artifact.get("bytecode").and_then(|b| b.as_str()).unwrap_or_default();
    // A uint8 is ABI-encoded as one 32-byte word, like a uint256 of the same value.
    let args = (name.to_owned(), symbol.to_owned(), alloy_primitives::U256::from(decimals))
        .abi_encode_params();
    let data = format!("{code}{}", hex::encode(args));
    let receipt =
        send_and_wait(rpc, serde_json::json!({"from": from, "data": data, "gas": "0x200000"}))
            .await?;
    let created = receipt.get("contractAddress").and_then(|a| a.as_str()).unwrap_or_default();
    let a: alloy_primitives::Address =
        created.parse().map_err(|_| fail(format!("no contract address in {receipt}")))?;
    use strongroom_chain::TxCodec;
    strongroom_units::Address::parse(rpc.codec().chain(), &a.to_checksum(None))
        .map_err(|e| fail(e.to_string()))
}

/// Mint `value` base units of the test token to `to` (only its deployer may).
pub async fn mint_test_token(
    rpc: &crate::rpc::EthRpc,
    from: &str,
    token: &strongroom_units::Address,
    to: &strongroom_units::Address,
    value: u128,
) -> Result<String, strongroom_chain::ClientError> {
    use alloy_sol_types::SolCall;
    let to = crate::eth_address(to)
        .map_err(|e| strongroom_chain::ClientError { message: e.to_string(), retryable: false })?;
    let data = mintCall { to, value: alloy_primitives::U256::from(value) }.abi_encode();
    let call = serde_json::json!({"from": from, "to": token.as_str(), "data": format!("0x{}", hex::encode(data)), "gas": "0x100000"});
    let receipt = send_and_wait(rpc, call).await?;
    Ok(receipt.get("transactionHash").and_then(|h| h.as_str()).unwrap_or_default().to_owned())
}

/// `eth_sendTransaction` from an unlocked account, then wait (up to 10 s) for its receipt;
/// a reverted transaction is an error.
pub async fn send_and_wait(
    rpc: &crate::rpc::EthRpc,
    tx: serde_json::Value,
) -> Result<serde_json::Value, strongroom_chain::ClientError> {
    let hash = rpc.call("eth_sendTransaction", serde_json::json!([tx])).await?;
    for _ in 0..200 {
        let r = rpc.call("eth_getTransactionReceipt", serde_json::json!([hash])).await?;
        if !r.is_null() {
            if r.get("status").and_then(|s| s.as_str()) != Some("0x1") {
                return Err(strongroom_chain::ClientError {
                    message: format!("transaction {hash} reverted"),
                    retryable: false,
                });
            }
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(strongroom_chain::ClientError {
        message: format!("transaction {hash} was not mined in 10 s"),
        retryable: true,
    })
}

/// Where `scripts/install-eth-tools` puts the Safe 1.4.1 build artifacts (npm
/// `@safe-global/safe-contracts`), relative to the repository root.
pub const SAFE_ARTIFACTS: &str =
    "tools/eth/node_modules/@safe-global/safe-contracts/build/artifacts/contracts";

fn safe_bytecode(root: &Path, file: &str) -> Result<String, strongroom_chain::ClientError> {
    let fail = |m: String| strongroom_chain::ClientError { message: m, retryable: false };
    let path = root
        .ancestors()
        .map(|d| d.join(SAFE_ARTIFACTS).join(file))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            fail(format!("no {file} under {SAFE_ARTIFACTS}: run scripts/install-eth-tools"))
        })?;
    let text =
        std::fs::read_to_string(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let artifact: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    artifact
        .get("bytecode")
        .and_then(|b| b.as_str())
        .map(str::to_owned)
        .ok_or_else(|| fail(format!("{}: no bytecode", path.display())))
}

/// The proxy creation code in the npm artifacts (`SafeProxy.json`), the same bytes as
/// the factory's `proxyCreationCode()` when both come from one build.
pub fn safe_proxy_creation_code(root: &Path) -> Result<Vec<u8>, strongroom_chain::ClientError> {
    let code = safe_bytecode(root, "proxies/SafeProxy.sol/SafeProxy.json")?;
    hex::decode(code.trim_start_matches("0x")).map_err(|e| strongroom_chain::ClientError {
        message: format!("SafeProxy.json bytecode: {e}"),
        retryable: false,
    })
}

/// The deterministic `CREATE2` deployer anvil (and most dev nodes) ship
/// (github.com/Arachnid/deterministic-deployment-proxy): call data `salt ‖ init code`.
pub const CREATE2_DEPLOYER: alloy_primitives::Address =
    alloy_primitives::address!("4e59b44847b379578588920ca78fbf26c0b4956c");

/// Dev nodes only: deploy Safe 1.4.1's singleton (`Safe`, the L1 one), `SafeProxyFactory`
/// and `CompatibilityFallbackHandler` from the npm artifacts under `root`, signed and paid
/// for by `relayer`. On a public network use [`crate::safe::SafeContracts::CANONICAL`].
///
/// Through the node's deterministic deployer (salt 0) when it has one, so every fresh dev
/// node gets the same three addresses and a contract already there is not deployed again;
/// otherwise as plain creations from the relayer.
pub async fn deploy_safe_contracts(
    rpc: &crate::rpc::EthRpc,
    relayer: &crate::relayer::RelayerKey,
    root: &Path,
) -> Result<crate::safe::SafeContracts, crate::relayer::RelayError> {
    use crate::relayer::{submit, Relay, RelayError};
    use crate::safe_node::{has_code, MINED_WITHIN};
    let deterministic = has_code(rpc, CREATE2_DEPLOYER).await?;
    let mut deployed = Vec::new();
    for file in [
        "Safe.sol/Safe.json",
        "proxies/SafeProxyFactory.sol/SafeProxyFactory.json",
        "handler/CompatibilityFallbackHandler.sol/CompatibilityFallbackHandler.json",
    ] {
        let code = safe_bytecode(root, file)?;
        let code = hex::decode(code.trim_start_matches("0x"))
            .map_err(|e| RelayError::Internal(format!("{file}: {e}")))?;
        let address = if deterministic {
            let salt = alloy_primitives::B256::ZERO;
            let address = CREATE2_DEPLOYER.create2_from_code(salt, &code);
            if !has_code(rpc, address).await? {
                let mut data = salt.to_vec();
                data.extend_from_slice(&code);
                let relay = Relay { to: Some(CREATE2_DEPLOYER), data, fee_cap_wei: None };
                submit(rpc, relayer, &relay, MINED_WITHIN).await?;
                if !has_code(rpc, address).await? {
                    return Err(RelayError::Internal(format!(
                        "{file}: the deterministic deployer left no code at {address}"
                    )));
                }
            }
            address
        } else {
            let relay = Relay { to: None, data: code, fee_cap_wei: None };
            submit(rpc, relayer, &relay, MINED_WITHIN).await?.contract_address.ok_or_else(|| {
                RelayError::Internal(format!("{file}: no contract address in the receipt"))
            })?
        };
        deployed.push(address);
    }
    let [singleton, factory, fallback_handler] = deployed.as_slice() else {
        return Err(RelayError::Internal("three contracts were to be deployed".into()));
    };
    Ok(crate::safe::SafeContracts {
        singleton: *singleton,
        factory: *factory,
        fallback_handler: *fallback_handler,
    })
}
