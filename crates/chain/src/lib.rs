//! The chain adapter contract.
//!
//! An adapter turns an [`Intent`] into an unsigned transaction ([`TxCodec::build`]), reads an
//! unsigned transaction back into the [`Movement`] it would make ([`TxCodec::decode`], the
//! check every signer runs), says what must be signed ([`TxCodec::digests`]) and puts
//! signatures into the transaction ([`TxCodec::attach`]). Those four are pure. Talking to a
//! node is [`ChainClient`]: broadcast, transaction status, head, balances, deposits.
//!
//! [`check_movement`] is the one comparison between a decoded transaction and an intent; the
//! signers and the engine both use it, so "what the transaction does" means the same thing
//! everywhere. [`conformance`] holds the tests every adapter must pass.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use strongroom_core::Intent;
use strongroom_units::{Address, Amount, ChainId};

pub mod conformance;

/// What a transaction does, read from its bytes: the only facts a signer trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub chain: ChainId,
    /// The token contract, `None` for the chain's native coin.
    pub contract: Option<Address>,
    pub destination: Address,
    /// In the asset's base units.
    pub amount: Amount,
    /// The most the transaction can pay in fees, in the fee asset's base units.
    pub max_fee: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The bytes are not a transaction this adapter accepts (malformed, non-canonical, or a
    /// kind it refuses: contract creation, access lists, unknown call data).
    #[error("transaction refused: {0}")]
    Decode(String),
    /// The transaction does something the intent does not say.
    #[error("transaction {field} is {tx} but the intent says {intent}")]
    Mismatch { field: &'static str, tx: String, intent: String },
    /// A part of the transaction no intent accounts for (a foreign input, an output the
    /// intent does not name, a previous output stated falsely, a sighash type other than
    /// the default), typed so a signer's refusal names it.
    #[error("transaction refused: {0}")]
    Refused(strongroom_core::TxRefusal),
    #[error("maximum fee {max_fee} exceeds the fee cap {cap}")]
    FeeAboveCap { max_fee: u128, cap: u128 },
    /// The intent or the parameters cannot be turned into a transaction.
    #[error("cannot build the transaction: {0}")]
    Build(String),
    #[error("signature refused: {0}")]
    Signature(String),
}

/// Compare what a transaction does with what the intent approved. Every field must match
/// exactly; the fee may be lower than the cap, never higher.
pub fn check_movement(movement: &Movement, intent: &Intent) -> Result<(), ChainError> {
    fn differ(field: &'static str, tx: &str, intent: &str) -> ChainError {
        ChainError::Mismatch { field, tx: tx.to_owned(), intent: intent.to_owned() }
    }
    if movement.chain != intent.chain {
        return Err(differ("chain", movement.chain.as_str(), intent.chain.as_str()));
    }
    let name =
        |c: &Option<Address>| c.as_ref().map_or("the native coin", |a| a.as_str()).to_owned();
    if movement.contract != intent.asset.contract {
        return Err(differ("asset", &name(&movement.contract), &name(&intent.asset.contract)));
    }
    if movement.destination != intent.destination {
        return Err(differ(
            "destination",
            movement.destination.as_str(),
            intent.destination.as_str(),
        ));
    }
    if movement.amount != intent.amount {
        return Err(differ(
            "amount",
            &movement.amount.base_units().to_string(),
            &intent.amount.base_units().to_string(),
        ));
    }
    if movement.max_fee > intent.fee_cap {
        return Err(ChainError::FeeAboveCap {
            max_fee: movement.max_fee.base_units(),
            cap: intent.fee_cap.base_units(),
        });
    }
    Ok(())
}

/// A transaction as stored and sent: its bytes and its id on the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    /// The raw signed transaction.
    #[serde(with = "hex_bytes")]
    pub raw: Vec<u8>,
    /// The chain's transaction id, as the chain's explorers print it.
    pub txid: String,
}

/// The pure half of an adapter.
pub trait TxCodec: Send + Sync {
    /// What `build` needs besides the intent (nonce and fees, or inputs and fee rate).
    type Params: Clone + std::fmt::Debug + Send + Sync;

    fn chain(&self) -> &ChainId;

    /// The unsigned transaction that carries out `intent`. Refuses parameters whose maximum
    /// fee exceeds the intent's fee cap.
    fn build(&self, intent: &Intent, params: &Self::Params) -> Result<Vec<u8>, ChainError>;

    /// What an unsigned transaction would do. Refuses anything that is not exactly one plain
    /// transfer this adapter knows how to read.
    fn decode(&self, unsigned: &[u8]) -> Result<Movement, ChainError>;

    /// The 32-byte digests that must be signed, in order.
    fn digests(&self, unsigned: &[u8]) -> Result<Vec<[u8; 32]>, ChainError>;

    /// Put signatures (one per digest, made by `public_key`, SEC1-encoded) into the
    /// transaction. Refuses a signature that is not `public_key`'s over the digest.
    fn attach(
        &self,
        unsigned: &[u8],
        public_key: &[u8],
        signatures: &[Vec<u8>],
    ) -> Result<SignedTx, ChainError>;

    /// The sender address that `public_key` controls on this chain.
    fn address_of(&self, public_key: &[u8]) -> Result<Address, ChainError>;
}

/// Where a transaction stands on the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxStatus {
    /// The node has never heard of it (or forgot it after a reorg).
    Unknown,
    /// In the node's mempool.
    Pending,
    /// In a block on the canonical chain.
    Included { block: BlockRef, confirmations: u64, success: bool, fee_paid: Amount },
}

/// A block: height and hash (hex, as the chain prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub number: u64,
    pub hash: String,
}

/// A transfer into one of our addresses, seen in a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingTransfer {
    pub block: BlockRef,
    pub txid: String,
    /// Position within the transaction (log index for tokens, 0 for a native transfer), so
    /// `(txid, index)` names one transfer.
    pub index: u64,
    pub contract: Option<Address>,
    pub from: Option<Address>,
    pub to: Address,
    pub amount: Amount,
}

/// Errors from a node. `retryable` says whether the same call may succeed later
/// (connection refused, timeout, rate limit) or never will (the node refused the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub message: String,
    pub retryable: bool,
}

/// The networked half of an adapter.
#[async_trait]
pub trait ChainClient: Send + Sync {
    /// Send a signed transaction. Sending the same transaction again is not an error: it
    /// returns the same id (the node already has it, or it is already in a block).
    async fn broadcast(&self, tx: &SignedTx) -> Result<String, ClientError>;
    async fn status(&self, txid: &str) -> Result<TxStatus, ClientError>;
    async fn head(&self) -> Result<BlockRef, ClientError>;
    /// The canonical block at `number`, or `None` beyond the head.
    async fn block(&self, number: u64) -> Result<Option<BlockRef>, ClientError>;
    /// `address`'s balance of the native coin (`contract = None`) or of a token, at the head.
    async fn balance(
        &self,
        address: &Address,
        contract: Option<&Address>,
    ) -> Result<Amount, ClientError>;
    /// Transfers of the native coin and of `contracts` into the watched addresses (the keys
    /// of `watched`, possibly millions: looked up per transfer, never listed to the node
    /// when there are many) in blocks `from..=to`.
    async fn incoming(
        &self,
        from: u64,
        to: u64,
        watched: &Watched,
        contracts: &[Address],
    ) -> Result<Vec<IncomingTransfer>, ClientError>;
}

/// The addresses a deposit watcher watches, each with whose it is.
pub type Watched = std::collections::HashMap<Address, uuid::Uuid>;

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}
