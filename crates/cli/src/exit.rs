//! How the `strongroom` command ends, and how it prints what it found: the one table of its
//! exit codes (`strongroom-cold` uses the same numbers), the errors that choose a code other
//! than "could not run", and the `--output text|json` choice.

use std::fmt;
use std::io::IsTerminal;

/// The exit codes, for scripts: the command worked; it worked and found a problem; it could
/// not run; it was called wrongly. README, "Exit codes", shows the same table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done, and every check passed.
    Ok,
    /// 1: the command ran and its answer is no: `audit verify` found tampering, `reconcile`
    /// found the ledger and the chain differ, a signer node or an offline review refused, a
    /// drill's check failed, a benchmark saw errors, or a person answered no at a prompt.
    Problem,
    /// 2: the command could not do its work: bad or missing configuration, an unreachable
    /// server or node, a refusal from the API, a file it could not read or write, a prompt
    /// with no terminal to ask on (pass `--yes`).
    Failed,
    /// 64 (`EX_USAGE`): the command line is wrong: an unknown subcommand or flag, a missing
    /// or malformed value, flags that conflict, `--output json` where a command prints no
    /// data. Clap's own errors and those found after parsing alike.
    Usage,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Problem => 1,
            Exit::Failed => 2,
            Exit::Usage => 64,
        }
    }

    /// The code for an error that ended a command: [`Problem`] and the offline signer's
    /// refusals are findings (1), [`Usage`] is a wrong command line (64), anything else is a
    /// failure to run (2).
    pub fn of(e: &anyhow::Error) -> Exit {
        for cause in e.chain() {
            if cause.is::<Problem>() {
                return Exit::Problem;
            }
            if cause.is::<Usage>() {
                return Exit::Usage;
            }
            if let Some(c) = cause.downcast_ref::<strongroom_cold::ColdError>() {
                if c.is_refusal() {
                    return Exit::Problem;
                }
            }
            if let Some(b) = cause.downcast_ref::<strongroom_chain_bitcoin::BtcError>() {
                if strongroom_cold::is_bitcoin_refusal(b) {
                    return Exit::Problem;
                }
            }
        }
        Exit::Failed
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// A finding rather than a failure: the command did its check and the answer is no (exit 1).
#[derive(Debug)]
pub struct Problem(pub String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Problem {}

/// A command line that parsed but cannot work (exit 64), found after clap's own checks.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// How a command prints what it found (the global `--output`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for people (the default).
    #[default]
    Text,
    /// One JSON document on stdout and nothing else there; messages for people go to stderr.
    Json,
}

impl Output {
    pub fn is_json(self) -> bool {
        self == Output::Json
    }

    /// Print `value` as the command's one JSON document.
    pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    /// Print a result: `text` for people, or `json` as the command's one JSON document.
    pub fn print(self, text: &str, json: serde_json::Value) -> anyhow::Result<()> {
        match self {
            Output::Text => println!("{text}"),
            Output::Json => Output::print_json(&json)?,
        }
        Ok(())
    }

    /// A line for the person running the command, shown before its result: on stdout in
    /// text, on stderr in JSON (where stdout holds the document alone).
    pub fn say(self, line: &str) {
        match self {
            Output::Text => println!("{line}"),
            Output::Json => eprintln!("{line}"),
        }
    }
}

/// A command that asks before it acts. Made when the command starts, so that one that would
/// have to ask with no terminal to ask on fails at once, before it does anything.
#[derive(Debug)]
pub struct Confirm {
    yes: bool,
}

impl Confirm {
    /// `command` (e.g. `governance sign`) will ask, unless `yes`: an error (exit 2) when
    /// stdin is not a terminal, rather than reading its end as "no".
    pub fn new(yes: bool, command: &str) -> anyhow::Result<Confirm> {
        if !yes && !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "`strongroom {command}` needs confirmation: pass --yes (stdin is not a terminal)"
            );
        }
        Ok(Confirm { yes })
    }

    /// Ask `question` on the terminal (yes when `--yes` was given).
    pub fn ask(&self, question: &str) -> anyhow::Result<bool> {
        use std::io::Write;
        if self.yes {
            return Ok(true);
        }
        eprint!("{question} [y/N] ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok(matches!(line.trim(), "y" | "Y" | "yes"))
    }
}
