//! The `strongroom-cold` command line: every subcommand and flag with its help. The binary
//! (`src/bin/strongroom-cold.rs`) parses it and runs it; [`command`] gives the same
//! definition to the tests that check every flag is explained and to `completions`.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// The key holders' offline tool.
#[derive(Parser, Debug)]
#[command(
    name = "strongroom-cold",
    version,
    about = "Strongroom offline signer (no network code)",
    long_about = "Strongroom offline signer (no network code): it runs on a machine that never \
                  touches a network and takes signing bundles as files.\n\n\
                  Key ceremony: `init`, `account-key`, `descriptor`, `install-wallet` or \
                  `install-safe`, `backup`. Signing: `sign`. Outside cosigners: \
                  `wallet-descriptor`, `export-psbt`, `import-psbt`.\n\n\
                  Exit codes: 0 done; 1 a check refused what was offered (a bundle, a PSBT) or \
                  the answer at the prompt was no; 2 it could not run (a missing file, a wrong \
                  passphrase, no terminal to confirm on); 64 a wrong command line."
)]
pub struct Cli {
    /// How to print results: `text` for people, or `json`: one JSON document on stdout and
    /// nothing else there (the review shown before a confirmation then goes to stderr).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// How a command prints what it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for people (the default).
    #[default]
    Text,
    /// One JSON document on stdout and nothing else there.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make this machine's cold key (or restore it from a backup) and seal it under a
    /// passphrase. Prints the key's account key (Bitcoin) or owner address (Ethereum): the
    /// only thing that leaves the machine.
    Init {
        /// The signer's home folder, made here (it must not hold a key yet), e.g.
        /// /media/cold/home.
        #[arg(long)]
        home: PathBuf,
        /// The CAIP-2 chain this key signs on, e.g. bip122:000000000019d6689c085ae165831e93
        /// (Bitcoin), bip122:0f9188f13cb7b2c71f2a335e3a4fc328 (regtest) or eip155:1
        /// (Ethereum, for a Safe owner).
        #[arg(long)]
        chain: String,
        /// The governance genesis file (`genesis.json` from `strongroom governance init`):
        /// the members and policy every bundle is checked against.
        #[arg(long)]
        genesis: PathBuf,
        /// The genesis hash every signer pins (`genesis.pin`, 64 hex digits); the genesis
        /// must hash to it.
        #[arg(long)]
        pin: String,
        /// A file whose first line is the new key's passphrase. Default: asked twice on the
        /// terminal without echo (read from stdin when it is not a terminal).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Restore the key from this backup (`strongroom-cold backup`) instead of making a
        /// new one.
        #[arg(long)]
        restore: Option<PathBuf>,
        /// A file whose first line is the backup's passphrase (with `--restore`). Default:
        /// asked on the terminal.
        #[arg(long)]
        backup_passphrase_file: Option<PathBuf>,
    },
    /// Print this key's account key with its origin (the only thing to copy off the machine),
    /// or its owner address for an Ethereum home.
    AccountKey {
        /// The signer's home folder (made by `init`).
        #[arg(long)]
        home: PathBuf,
    },
    /// Build the k-of-n wallet descriptor from the key holders' account keys (no home
    /// needed): what `install-wallet` takes on every holder's machine.
    Descriptor {
        /// The CAIP-2 Bitcoin chain, e.g. bip122:000000000019d6689c085ae165831e93.
        #[arg(long)]
        chain: String,
        /// How many of the keys must sign (k of n), e.g. 2.
        #[arg(long)]
        threshold: usize,
        /// A holder's account key as `account-key` printed it, origin included; repeat for
        /// each holder.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
    },
    /// Install a Bitcoin wallet this key co-signs for (from `descriptor`); it must include
    /// this key. Prints its first receive address, for the holders to compare.
    InstallWallet {
        /// The signer's home folder (made by `init`).
        #[arg(long)]
        home: PathBuf,
        /// The wallet's id, as bundles name it (e.g. cold-btc-1).
        #[arg(long)]
        wallet: String,
        /// The wallet's multipath descriptor, as `descriptor` printed it.
        #[arg(long)]
        descriptor: String,
    },
    /// Install a Safe this key owns (its address, all its owners, its threshold), as
    /// `strongroom cold deploy-safe` deployed it.
    InstallSafe {
        /// The signer's home folder (made by `init --chain eip155:…`).
        #[arg(long)]
        home: PathBuf,
        /// The wallet's id, as bundles name it (e.g. cold-eth-1).
        #[arg(long)]
        wallet: String,
        /// The Safe's address (0x…).
        #[arg(long)]
        safe: String,
        /// An owner's address (0x…); repeat for every owner, this key's included.
        #[arg(long = "owner", required = true)]
        owners: Vec<String>,
        /// How many owners must sign, as the Safe was deployed with.
        #[arg(long)]
        threshold: u8,
    },
    /// Write an encrypted backup of the key, under its own passphrase.
    Backup {
        /// The signer's home folder (made by `init`).
        #[arg(long)]
        home: PathBuf,
        /// Where to write the backup (text; keep it apart from the machine).
        #[arg(long)]
        out: PathBuf,
        /// A file whose first line is the key's passphrase. Default: asked on the terminal.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// A file whose first line is the passphrase the backup is sealed under. Default:
        /// asked on the terminal.
        #[arg(long)]
        backup_passphrase_file: Option<PathBuf>,
    },
    /// Print an installed wallet's output descriptor (BIP-380, with its checksum), for a
    /// watch-only import into Sparrow (File > New Wallet > Import) or Bitcoin Core.
    WalletDescriptor {
        /// The signer's home folder (made by `init`).
        #[arg(long)]
        home: PathBuf,
        /// The wallet id given to install-wallet.
        #[arg(long)]
        wallet: String,
        /// Print the JSON that Bitcoin Core's `importdescriptors` takes instead (the receive
        /// and change descriptors, each with its checksum).
        #[arg(long)]
        bitcoin_core: bool,
    },
    /// Check a Bitcoin bundle as `sign` does and write its PSBT as a plain BIP-174 file, for
    /// a cosigner in Sparrow or on a hardware wallet.
    ExportPsbt {
        /// The signer's home folder (made by `init`).
        #[arg(long)]
        home: PathBuf,
        /// The bundle from the online side (or one already signed by other holders).
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the PSBT (binary `.psbt` unless --base64).
        #[arg(long)]
        out: PathBuf,
        /// Write base64 text instead of binary.
        #[arg(long)]
        base64: bool,
    },
    /// Merge the signatures of a PSBT that an outside cosigner signed (binary or base64)
    /// into the bundle, after checking the bundle as `sign` does; refused if the PSBT's
    /// transaction is not the bundle's or a signature does not verify.
    ImportPsbt {
        /// The signer's home folder (made by `init`).
        #[arg(long)]
        home: PathBuf,
        /// The bundle the PSBT was exported from.
        #[arg(long = "in")]
        input: PathBuf,
        /// The PSBT file the cosigner signed.
        #[arg(long)]
        psbt: PathBuf,
        /// Where to write the bundle with the merged signatures.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a signing bundle against this machine's governance and wallets, show it in
    /// plain words, and sign it after confirmation (type `yes`) and the passphrase.
    Sign {
        /// The signer's home folder (made by `init`).
        #[arg(long)]
        home: PathBuf,
        /// The bundle from the online side (or one already signed by other holders).
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the bundle with this key's signature added.
        #[arg(long)]
        out: PathBuf,
        /// A file whose first line is the key's passphrase. Default: asked on the terminal
        /// without echo (a line of stdin when it is not a terminal).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Sign without asking, once the checks pass. Without it, stdin must be a terminal:
        /// with no one to ask, `sign` stops before it reads the bundle.
        #[arg(long)]
        yes: bool,
    },
    /// Print a shell completion script, e.g. `strongroom-cold completions bash >
    /// /etc/bash_completion.d/strongroom-cold`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// The command line as clap sees it, for tests and completion scripts.
pub fn command() -> clap::Command {
    Cli::command()
}
