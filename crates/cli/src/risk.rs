//! `strongroom risk`: the risk models offline. `eval` replays a labelled CSV through them
//! with progressive validation and prints ROC AUC and PR AUC per model.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum RiskCommand {
    /// Progressive validation over a labelled CSV (plain or gzipped, numeric feature
    /// columns): score each row, then learn from it; print ROC AUC and PR AUC.
    Eval {
        file: PathBuf,
        /// The label column (0/1 or true/false); every other column is a feature.
        #[arg(long)]
        label_column: String,
        /// Only the first N rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Leave a column out (repeatable), e.g. an id or a text column.
        #[arg(long = "skip-column")]
        skip: Vec<String>,
    },
}

pub fn run(cmd: RiskCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        RiskCommand::Eval { file, label_column, limit, skip } => {
            let input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let table = strongroom_risk::eval::read_table(
                std::io::BufReader::new(input),
                &label_column,
                &skip,
                limit,
            )?;
            use strongroom_core::Env;
            let env = strongroom_core::SystemEnv::new();
            let started = env.monotonic();
            let report = strongroom_risk::eval::evaluate(&table, &Default::default())?;
            let secs = env.monotonic().saturating_sub(started).as_secs_f64().max(1e-9);
            println!(
                "{} rows ({} positive), {} features: {}",
                report.rows,
                report.positives,
                report.features.len(),
                report.features.join(", ")
            );
            println!("{:<40} {:>8} {:>8}", "model", "ROC AUC", "PR AUC");
            for m in &report.models {
                println!("{:<40} {:>8.4} {:>8.4}", m.name, m.roc_auc, m.pr_auc);
            }
            if let Some(best) = report.best() {
                println!("ROC AUC {:.4}", best.roc_auc);
                println!("PR AUC {:.4}", best.pr_auc);
                println!("best: {}", best.name);
            }
            println!(
                "{:.0} rows/s through all models (each row scored and learned by each); models hold {} bytes",
                report.rows as f64 / secs,
                report.model_bytes
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
