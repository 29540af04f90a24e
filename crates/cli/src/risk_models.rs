//! `strongroom risk models`: the risk model registry from the command line (the operations
//! are `runtime::risk_models`; every move is audited under `cli:<who>`).

use crate::exit::Exit;

use clap::Subcommand;
use strongroom_core::{Env, SystemEnv};
use strongroom_runtime::risk_models;
use strongroom_store::prelude::*;
use strongroom_store::{RiskModel, WriteCtx};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every version: status, what it was trained on, the last note.
    List {
        #[command(flatten)]
        db: crate::DbArgs,
    },
    /// Train a model on every released and rejected withdrawal so far (oldest first, with
    /// progressive validation) and register it as a candidate.
    Train {
        /// Why (kept with the version and in the audit log).
        #[arg(long, default_value = "trained on the labelled history")]
        note: String,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        db: crate::DbArgs,
    },
    /// Score a version in shadow beside the live model on every assessment (it decides
    /// nothing); replaces any other shadow.
    Shadow {
        /// The model version (`risk models list`).
        version: i64,
        /// Why (kept with the version and in the audit log).
        #[arg(long, default_value = "compare with the live model")]
        note: String,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        db: crate::DbArgs,
    },
    /// The shadow against the live model on the labelled decisions both scored.
    Compare {
        #[command(flatten)]
        db: crate::DbArgs,
    },
    /// Make the shadow version live, if it ranked at least as well as the live model on
    /// enough labelled decisions while in shadow.
    Promote {
        /// The model version (`risk models list`), the one in shadow.
        version: i64,
        /// Promote without the comparison, for this reason (kept in the audit log).
        #[arg(long)]
        force: Option<String>,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        db: crate::DbArgs,
    },
    /// Make the version that was live before the current one live again.
    Rollback {
        /// Why (kept with the version and in the audit log).
        #[arg(long)]
        note: String,
        #[command(flatten)]
        who: Who,
        #[command(flatten)]
        db: crate::DbArgs,
    },
}

/// Who acts (the audit log's actor is `cli:<who>`).
#[derive(Debug, clap::Args)]
pub struct Who {
    /// Your name, as the audit log should show it.
    #[arg(long = "by", env = "USER", default_value = "operator")]
    by: String,
}

fn ctx(who: &Who) -> WriteCtx {
    WriteCtx { actor: format!("cli:{}", who.by), now: SystemEnv::new().now(), request_id: None }
}

fn show(m: &RiskModel) {
    println!(
        "version {:>3}  {:<9}  trained on {}  — {}",
        m.version,
        m.status.as_str(),
        m.trained_on,
        m.note
    );
}

pub async fn run(cmd: ModelsCommand) -> anyhow::Result<Exit> {
    match cmd {
        ModelsCommand::List { db } => {
            let store = db.open().await?;
            let all = store.risk_models().await?;
            if all.is_empty() {
                println!("no registered versions: the built-in model (version 0) is live");
            }
            for m in &all {
                show(m);
            }
        }
        ModelsCommand::Train { note, who, db } => {
            let store = db.open().await?;
            let m = risk_models::train_candidate(&store, &ctx(&who), &note).await?;
            println!("registered a candidate:");
            show(&m);
        }
        ModelsCommand::Shadow { version, note, who, db } => {
            let store = db.open().await?;
            show(&risk_models::shadow(&store, &ctx(&who), version, &note).await?);
        }
        ModelsCommand::Compare { db } => {
            let store = db.open().await?;
            match risk_models::compare_shadow(&store).await? {
                None => println!("no version is in shadow"),
                Some(c) => {
                    let auc = |a: Option<f64>| a.map_or("-".to_owned(), |a| format!("{a:.4}"));
                    println!(
                        "shadow version {}: {} labelled decisions ({} rejected) while in shadow; ROC AUC shadow {}, live {} (promotion needs {} with both outcomes and the shadow at least as good)",
                        c.version,
                        c.labels,
                        c.rejected,
                        auc(c.shadow_roc_auc),
                        auc(c.live_roc_auc),
                        risk_models::MIN_COMPARED
                    );
                }
            }
        }
        ModelsCommand::Promote { version, force, who, db } => {
            let store = db.open().await?;
            show(&risk_models::promote(&store, &ctx(&who), version, force.as_deref()).await?);
        }
        ModelsCommand::Rollback { note, who, db } => {
            let store = db.open().await?;
            show(&risk_models::rollback(&store, &ctx(&who), &note).await?);
        }
    }
    Ok(Exit::Ok)
}
