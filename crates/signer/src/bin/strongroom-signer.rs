//! `strongroom-signer --config node.toml`: run one MPC signer node.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use strongroom_core::SystemEnv;
use strongroom_signer::{Config, Node};

#[derive(Parser, Debug)]
#[command(name = "strongroom-signer", version, about = "Strongroom MPC signer node")]
struct Args {
    /// The node's configuration file (TOML).
    #[arg(long, env = "STRONGROOM_SIGNER_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    strongroom_signer::node::init_logging();
    let text = std::fs::read_to_string(&args.config)?;
    let cfg: Config = toml::from_str(&text)?;
    let node = Node::new(cfg, Arc::new(SystemEnv::new()))?;
    node.start().await?;
    // SIGTERM or Ctrl-C: finish what runs, start nothing new, then exit.
    strongroom_signer::node::shutdown_signal().await?;
    node.drain(strongroom_signer::node::DRAIN).await;
    Ok(())
}
