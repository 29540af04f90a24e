//! The fixed world every target decodes against: a governance genesis with known member
//! keys and its installed log (a policy), the Ethereum codec and hot key a signer node holds,
//! a 2-of-3 Bitcoin cold wallet, a Safe with three owners, a registered passkey, and the
//! intents the seeds pay. All keys are derived from constant bytes: they are test keys that
//! must never hold anything.
//!
//! Built once per process ([`fixtures`]); a fixture that cannot be built is a bug in this
//! crate, reported through [`crate::broken`].

use std::sync::LazyLock;

use std::str::FromStr;

use strongroom_chain_bitcoin::bitcoin::absolute::LockTime;
use strongroom_chain_bitcoin::bitcoin::transaction::Version;
use strongroom_chain_bitcoin::bitcoin::{
    self, Network, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use strongroom_chain_bitcoin::keys::ColdSecret;
use strongroom_chain_bitcoin::wallet::ColdWallet;
use strongroom_chain_bitcoin::Multisig;
use strongroom_chain_ethereum::safe::EthAddress;
use strongroom_chain_ethereum::EthCodec;
use strongroom_core::{FixedEnv, Intent, IntentAsset, Timestamp, WalletId};
use strongroom_governance::log::{replay, AssetSpec, Change, Entry, Genesis, MemberSpec, State};
use strongroom_governance::policy::Policy;
use strongroom_governance::webauthn::{Assertion, Passkey, PasskeySpec};
use strongroom_governance::Role;
use strongroom_signer::wire::{KeyInfo, Scheme};
use strongroom_units::chain::{BITCOIN_REGTEST, DEV_TOKEN_CONTRACT};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};
use uuid::Uuid;

/// The clock every target reads (2027-01-15).
pub const NOW_MS: i64 = 1_800_000_000_000;
pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;
/// The genesis is a day old at [`NOW_MS`].
pub const GENESIS_MS: i64 = NOW_MS - DAY_MS;
/// anvil's chain.
pub const ETH_CHAIN: &str = "eip155:31337";
/// Where the seeds pay on Ethereum (EIP-55's own example address).
pub const ETH_DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
/// Where the seeds pay on Bitcoin regtest (BIP-173's P2WPKH example key).
pub const BTC_DEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
/// The Bitcoin seeds' payment and fee cap, in satoshi.
pub const BTC_AMOUNT_SAT: u64 = 160_000_000;
pub const BTC_FEE_CAP_SAT: u64 = 20_000;
/// The Safe's address (any address: no chain is involved).
pub const SAFE_ADDRESS: &str = "0x1111111111111111111111111111111111111111";
/// The passkey's relying party and the console origin it signs for.
pub const RP_ID: &str = "console.strongroom.test";
pub const ORIGIN: &str = "https://console.strongroom.test";
/// The challenge a passkey assertion in the `governance` target must answer.
pub const PASSKEY_CHALLENGE: [u8; 32] = [0x5a; 32];

/// Governance members: id, the byte their Ed25519 key is made of, their roles. `ada` also
/// registers the fixture passkey in the seeds' longer log.
pub const MEMBERS: [(&str, u8, Role); 7] = [
    ("ada", 1, Role::Admin),
    ("bob", 2, Role::Admin),
    ("cy", 3, Role::Admin),
    ("sec", 4, Role::SecurityOfficer),
    ("ann", 5, Role::Approver),
    ("ben", 6, Role::Approver),
    ("eve", 7, Role::Operator),
];
/// A member the seeds add later (an admin).
pub const LATE_MEMBER: (&str, u8) = ("dan", 8);

/// The policy the installed log sets: cold movements need two approvers, small hot ones
/// pass, proofs of control may be signed, everything else is blocked.
pub const POLICY_TOML: &str = r#"
version = 1
messages = ["proof_of_control"]

[[rules]]
name = "cold-two-approvers"
when = { tier = "cold" }
action = { kind = "approvals", count = 2, roles = ["approver"] }

[[rules]]
name = "hot-small"
when = { tier = "hot", max_amount = "1000000000000000000000000" }
action = { kind = "allow" }

[[rules]]
name = "everything-else"
action = { kind = "block", reason = "the fuzz fixtures allow nothing else" }

[[velocity]]
name = "hot-eth-daily"
wallet = "hot-eth-1"
asset = "ETH"
period_secs = 86400
max_amount = "100000000000000000000"
"#;

/// A governance member's Ed25519 key, by id (the seeds' members and [`LATE_MEMBER`]).
pub fn member_key(id: &str) -> Option<ed25519_dalek::SigningKey> {
    let byte = MEMBERS
        .iter()
        .find(|(m, _, _)| *m == id)
        .map(|(_, b, _)| *b)
        .or((id == LATE_MEMBER.0).then_some(LATE_MEMBER.1))?;
    Some(ed25519_dalek::SigningKey::from_bytes(&[byte; 32]))
}

/// A member as the log writes them.
pub fn member_spec(id: &str, roles: &[Role]) -> Option<MemberSpec> {
    Some(MemberSpec {
        id: id.to_owned(),
        public_key: hex::encode(member_key(id)?.verifying_key().to_bytes()),
        roles: roles.to_vec(),
        passkey: None,
    })
}

/// The signer node's hot key (`hot-eth-1`), secp256k1.
pub fn hot_key() -> Result<k256::ecdsa::SigningKey, String> {
    k256::ecdsa::SigningKey::from_slice(&[0x11; 32]).map_err(|e| e.to_string())
}

/// The Safe's owners' keys.
pub fn owner_keys() -> Result<Vec<k256::ecdsa::SigningKey>, String> {
    [0x21u8, 0x22, 0x23]
        .iter()
        .map(|b| k256::ecdsa::SigningKey::from_slice(&[*b; 32]).map_err(|e| e.to_string()))
        .collect()
}

/// The cold wallet's three key holders.
pub fn cold_secrets() -> Result<Vec<ColdSecret>, String> {
    [0x31u8, 0x32, 0x33]
        .iter()
        .map(|b| ColdSecret::from_bytes(&[*b; 32]).map_err(|e| e.to_string()))
        .collect()
}

/// The passkey's P-256 key (registered for `ada` in the genesis's passkey spec).
pub fn passkey_key() -> Result<p256::ecdsa::SigningKey, String> {
    p256::ecdsa::SigningKey::from_slice(&[0x41; 32]).map_err(|e| e.to_string())
}

/// The passkey as the log registers it.
pub fn passkey_spec() -> Result<PasskeySpec, String> {
    let key = passkey_key()?;
    Ok(PasskeySpec {
        rp_id: RP_ID.to_owned(),
        origin: ORIGIN.to_owned(),
        credential_id: "ZnV6ei1wYXNza2V5".to_owned(),
        public_key: hex::encode(key.verifying_key().to_encoded_point(false).as_bytes()),
    })
}

/// Everything fixed, built once.
#[derive(Debug)]
pub struct Fixtures {
    pub now: Timestamp,
    pub genesis: Genesis,
    /// The genesis's pinned hash (hex).
    pub pin: String,
    /// The log a signer already holds: one entry, the policy.
    pub log: Vec<Entry>,
    /// The state it replays to at [`NOW_MS`].
    pub state: State,
    pub eth_chain: ChainId,
    pub eth: EthCodec,
    /// The signer node's key, as its status reports it.
    pub key_info: KeyInfo,
    /// 0.5 ETH from `hot-eth-1`.
    pub eth_intent: Intent,
    /// 25 USDT (the dev token) from `hot-eth-1`.
    pub token_intent: Intent,
    /// 1.6 BTC from `cold-btc-1`, the 2-of-3 [`Fixtures::multisig`].
    pub btc_intent: Intent,
    pub multisig: Multisig,
    /// The unsigned PSBT the online side prepared for [`Fixtures::btc_intent`] from two
    /// deposits (1.5 and 0.3 BTC): what a cosigner's file must match.
    pub psbt: Psbt,
    /// 2 ETH from `cold-eth-1`, the Safe at [`SAFE_ADDRESS`].
    pub safe_intent: Intent,
    pub safe: EthAddress,
    pub safe_owners: Vec<EthAddress>,
    pub passkey: Passkey,
}

static FIXTURES: LazyLock<Result<Fixtures, String>> = LazyLock::new(build);

/// The fixtures; a fixture that cannot be built breaks every target at once, loudly.
pub fn fixtures() -> &'static Fixtures {
    match &*FIXTURES {
        Ok(f) => f,
        Err(e) => crate::broken(format_args!("the fuzz fixtures cannot be built: {e}")),
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// An intent paying `amount` base units of `symbol` from `wallet` on `chain`.
#[allow(clippy::too_many_arguments)] // One line per intent field reads best at the call sites.
pub fn make_intent(
    chain: &str,
    symbol: &str,
    decimals: u8,
    contract: Option<&str>,
    wallet: &str,
    destination: &str,
    amount: u128,
    fee_cap: u128,
    request: u128,
) -> Result<Intent, String> {
    let chain = ChainId::parse(chain).map_err(err)?;
    Ok(Intent {
        asset: IntentAsset {
            symbol: AssetSymbol::parse(symbol).map_err(err)?,
            decimals,
            contract: contract.map(|c| Address::parse(&chain, c)).transpose().map_err(err)?,
        },
        destination: Address::parse(&chain, destination).map_err(err)?,
        source_wallet: WalletId::parse(wallet).map_err(err)?,
        amount: Amount::from_base_units(amount).map_err(err)?,
        fee_cap: Amount::from_base_units(fee_cap).map_err(err)?,
        expires_at: Timestamp::from_unix_ms(NOW_MS + DAY_MS),
        request_id: Uuid::from_u128(request),
        chain,
    })
}

/// The genesis: [`MEMBERS`] (ada with the fixture passkey), quorum 2, a day's time-lock,
/// ETH and the dev token on anvil and BTC on regtest registered.
pub fn genesis() -> Result<Genesis, String> {
    let mut members = Vec::new();
    for (id, _, role) in MEMBERS {
        members.push(member_spec(id, &[role]).ok_or("no key for a member")?);
    }
    if let Some(ada) = members.first_mut() {
        ada.passkey = Some(passkey_spec()?);
    }
    let asset = |chain: &str, symbol: &str, decimals: u8, contract: Option<&str>| AssetSpec {
        chain: chain.to_owned(),
        symbol: symbol.to_owned(),
        decimals,
        contract: contract.map(str::to_owned),
    };
    Ok(Genesis {
        members,
        quorum: 2,
        whitelist_delay_ms: DAY_MS,
        created_at: Timestamp::from_unix_ms(GENESIS_MS),
        assets: vec![
            asset(ETH_CHAIN, "ETH", 18, None),
            asset(ETH_CHAIN, "USDT", 6, Some(DEV_TOKEN_CONTRACT)),
            asset(BITCOIN_REGTEST, "BTC", 8, None),
        ],
    })
}

/// Append `change` to `entries` (over `genesis`), signed by `signers` with their keys, at
/// `at_ms`.
pub fn append(
    genesis: &Genesis,
    entries: &mut Vec<Entry>,
    change: Change,
    signers: &[&str],
    at_ms: i64,
) -> Result<(), String> {
    let pin = hex::encode(genesis.hash().map_err(err)?);
    let state = replay(genesis, &pin, entries, Timestamp::from_unix_ms(i64::MAX)).map_err(err)?;
    let mut e = state.propose(change, Timestamp::from_unix_ms(at_ms));
    for s in signers {
        let key = member_key(s).ok_or_else(|| format!("no key for {s}"))?;
        e.sign(s, &key).map_err(err)?;
    }
    entries.push(e);
    Ok(())
}

fn build() -> Result<Fixtures, String> {
    let now = Timestamp::from_unix_ms(NOW_MS);
    let genesis = genesis()?;
    let pin = hex::encode(genesis.hash().map_err(err)?);
    let policy = Policy::from_toml(POLICY_TOML).map_err(err)?;
    let mut log = Vec::new();
    append(
        &genesis,
        &mut log,
        Change::SetPolicy { policy },
        &["ada", "bob"],
        GENESIS_MS + MINUTE_MS,
    )?;
    let state = replay(&genesis, &pin, &log, now).map_err(err)?;

    let eth_chain = ChainId::parse(ETH_CHAIN).map_err(err)?;
    let eth = EthCodec::new(eth_chain.clone()).map_err(err)?;
    let hot = hot_key()?;
    let key_info = KeyInfo {
        key_id: "hot-eth-1".to_owned(),
        scheme: Scheme::Ecdsa,
        threshold: 2,
        parties: vec![1, 2, 3],
        public_key: hex::encode(hot.verifying_key().to_encoded_point(true).as_bytes()),
        chain_code: Some(hex::encode([0x07; 32])),
    };
    let eth_intent = make_intent(
        ETH_CHAIN,
        "ETH",
        18,
        None,
        "hot-eth-1",
        ETH_DEST,
        500_000_000_000_000_000,
        21_000 * 100_000_000_000,
        1,
    )?;
    let token_intent = make_intent(
        ETH_CHAIN,
        "USDT",
        6,
        Some(DEV_TOKEN_CONTRACT),
        "hot-eth-1",
        ETH_DEST,
        25_000_000,
        100_000 * 100_000_000_000,
        2,
    )?;
    let btc_intent = make_intent(
        BITCOIN_REGTEST,
        "BTC",
        8,
        None,
        "cold-btc-1",
        BTC_DEST,
        u128::from(BTC_AMOUNT_SAT),
        u128::from(BTC_FEE_CAP_SAT),
        3,
    )?;
    let keys: Vec<String> = cold_secrets()?
        .iter()
        .map(|s| s.account_key(Network::Regtest).map_err(err))
        .collect::<Result<_, _>>()?;
    let multisig = Multisig::new(2, &keys, Network::Regtest).map_err(err)?;
    let psbt = prepare(&multisig, &btc_intent)?;
    let safe_intent = make_intent(
        ETH_CHAIN,
        "ETH",
        18,
        None,
        "cold-eth-1",
        ETH_DEST,
        2_000_000_000_000_000_000,
        0,
        4,
    )?;
    let safe: EthAddress = SAFE_ADDRESS.parse().map_err(err)?;
    let safe_owners =
        owner_keys()?.iter().map(strongroom_chain_ethereum::safe::address_of_key).collect();
    let passkey = Passkey::parse(&passkey_spec()?)?;
    Ok(Fixtures {
        now,
        genesis,
        pin,
        log,
        state,
        eth_chain,
        eth,
        key_info,
        eth_intent,
        token_intent,
        btc_intent,
        multisig,
        psbt,
        safe_intent,
        safe,
        safe_owners,
        passkey,
    })
}

/// A WebAuthn assertion by the fixtures' passkey whose challenge is `challenge`, as a
/// browser returns it (user present and verified).
pub fn assert_passkey(challenge: &[u8; 32]) -> Result<Assertion, String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    use sha2::{Digest, Sha256};

    let mut authenticator_data = Sha256::digest(RP_ID.as_bytes()).to_vec();
    authenticator_data.push(0x05); // UP | UV
    authenticator_data.extend_from_slice(&1u32.to_be_bytes());
    let client_data_json = serde_json::to_vec(&serde_json::json!({
        "type": "webauthn.get",
        "challenge": B64.encode(challenge),
        "origin": ORIGIN,
        "crossOrigin": false,
    }))
    .map_err(err)?;
    let mut signed = authenticator_data.clone();
    signed.extend_from_slice(&Sha256::digest(&client_data_json));
    let signature: p256::ecdsa::Signature = passkey_key()?.sign(&signed);
    Ok(Assertion {
        authenticator_data: B64.encode(&authenticator_data),
        client_data_json: B64.encode(&client_data_json),
        signature: B64.encode(signature.to_der().as_bytes()),
    })
}

/// A transaction from outside paying `sat` to `to` (its own input, `n` repeated, is never
/// checked).
pub fn funding(to: &bitcoin::Address, sat: u64, n: u8) -> Result<Transaction, String> {
    Ok(Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_str(&format!("{n:02x}").repeat(32)).map_err(err)?,
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: bitcoin::Amount::from_sat(sat),
            script_pubkey: to.script_pubkey(),
        }],
    })
}

/// The online side's unsigned PSBT for `intent` at 5 sat/vB, from a watch-only wallet
/// holding two deposits (1.5 and 0.3 BTC); deterministic (a seeded environment).
fn prepare(multisig: &Multisig, intent: &Intent) -> Result<Psbt, String> {
    let mut wallet = ColdWallet::new(multisig).map_err(err)?;
    let a = wallet.next_address();
    let b = wallet.next_address();
    wallet.add_transaction(funding(&a, 150_000_000, 1)?, 1).map_err(err)?;
    wallet.add_transaction(funding(&b, 30_000_000, 2)?, 2).map_err(err)?;
    let env = FixedEnv::new(Timestamp::from_unix_ms(NOW_MS), 9);
    Ok(wallet.prepare(intent, 5, &env).map_err(err)?.0)
}
