//! The one chain boundary as the engine's driver sees it: what differs between chains
//! (planning a transaction: nonce and gas on Ethereum, coins and a fee rate on Bitcoin;
//! putting the signatures in; the node) behind [`ChainAdapter`], so one [`crate::ChainEngine`]
//! drives every chain's withdrawals and sweeps through the same stored states, the same
//! governance gate and the same signer nodes.

use std::sync::Arc;

use async_trait::async_trait;
use strongroom_chain::{ChainClient, ChainError, SignedTx, TxCodec};
use strongroom_chain_bitcoin::client::BtcClient;
use strongroom_chain_bitcoin::hot::{HotCodec, HotCoin, HotParams};
use strongroom_chain_ethereum::rpc::EthRpc;
use strongroom_chain_ethereum::{transfer_calldata, EthParams, NATIVE_TRANSFER_GAS};
use strongroom_store::{Store, TxBuilder};
use strongroom_units::{Address, Amount, ChainId};

use crate::{EngineError, Job};

/// What a chain's transaction will be, before the store allocates its nonce and reserves
/// its fee and coins.
pub struct Planned {
    /// The lowest nonce the chain would accept (0 on chains without nonces).
    pub nonce_floor: u64,
    /// The most the transaction can burn in fees, reserved from the treasury.
    pub fee_reserve: Amount,
    /// The coins it spends (`txid:vout`), reserved for the job (none on account chains).
    pub coins: Vec<String>,
    /// The unsigned transaction for the nonce the store allocates.
    pub build: TxBuilder,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("nonce_floor", &self.nonce_floor)
            .field("fee_reserve", &self.fee_reserve)
            .field("coins", &self.coins)
            .finish_non_exhaustive()
    }
}

/// A plan, or why there is none yet.
#[derive(Debug)]
pub enum Plan {
    Ready(Planned),
    /// Nothing can be built until the chain changes (fees fall, coins confirm): why.
    Waiting(String),
}

/// One chain, for the withdrawal driver.
#[async_trait]
pub trait ChainAdapter: Send + Sync + std::fmt::Debug {
    fn chain(&self) -> &ChainId;
    /// The chain's node.
    fn client(&self) -> Arc<dyn ChainClient>;
    /// The address `public_key` (SEC1, compressed) controls on this chain.
    fn address_of(&self, public_key: &[u8]) -> Result<Address, ChainError>;
    /// The transaction that carries out `job`'s intent from `key`'s address `from`.
    async fn plan(
        &self,
        job: &Job,
        key: &[u8],
        from: &Address,
        store: &dyn Store,
    ) -> Result<Plan, EngineError>;
    /// The fee cap a transfer of `amount` (of the token `contract`, or the native coin) from
    /// `key`'s address `from` to `to` carries when planned now: what the planner will pay at
    /// today's fees, with the margin it allows itself.
    async fn fee_cap(
        &self,
        key: &[u8],
        from: &Address,
        to: &Address,
        contract: Option<&Address>,
        amount: Amount,
    ) -> Result<Amount, EngineError>;
    /// How many signatures `unsigned` needs from `key` (one per digest: one on Ethereum,
    /// one per input on Bitcoin); the signer nodes are asked for each in turn.
    fn signatures(&self, key: &[u8], unsigned: &[u8]) -> Result<usize, ChainError>;
    /// A fee bump of `unsigned` (the newest version of a job's transaction, which the network
    /// leaves waiting), built now: what it consumes, at today's fee estimate, when that pays
    /// enough more to replace it and stays under the intent's cap; `None` otherwise, and on a
    /// chain whose engine does not bump.
    async fn bump(
        &self,
        _key: &[u8],
        _intent: &strongroom_core::Intent,
        _unsigned: &[u8],
    ) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(None)
    }
    /// The signed transaction, each signature checked to be `key`'s over its digest.
    fn attach(
        &self,
        key: &[u8],
        unsigned: &[u8],
        signatures: &[Vec<u8>],
    ) -> Result<SignedTx, ChainError>;
}

/// Ethereum (EIP-1559 transfers of ETH and ERC-20 tokens) through a JSON-RPC node.
#[derive(Debug, Clone)]
pub struct EthAdapter {
    rpc: Arc<EthRpc>,
}

impl EthAdapter {
    pub fn new(rpc: EthRpc) -> Self {
        EthAdapter { rpc: Arc::new(rpc) }
    }

    pub fn rpc(&self) -> &EthRpc {
        &self.rpc
    }
}

#[async_trait]
impl ChainAdapter for EthAdapter {
    fn chain(&self) -> &ChainId {
        self.rpc.codec().chain()
    }

    fn client(&self) -> Arc<dyn ChainClient> {
        self.rpc.clone()
    }

    fn address_of(&self, public_key: &[u8]) -> Result<Address, ChainError> {
        self.rpc.codec().address_of(public_key)
    }

    async fn plan(
        &self,
        job: &Job,
        _key: &[u8],
        from: &Address,
        _store: &dyn Store,
    ) -> Result<Plan, EngineError> {
        let intent = &job.intent;
        let gas_limit = match &intent.asset.contract {
            // A plain transfer costs 21 000 gas, but paying a contract (a Safe's receive
            // function) costs more: estimate, with the same margin as for tokens.
            None => {
                // A destination that refuses the estimate (it reverts) gets the plain 21 000:
                // the chain then fails it as it would have, and the withdrawal concludes.
                let value = intent.amount.base_units();
                match self.rpc.estimate_gas(from, &intent.destination, value, &[]).await {
                    Ok(estimate) if estimate > NATIVE_TRANSFER_GAS => {
                        estimate.saturating_add(estimate / 5)
                    }
                    Ok(_) => NATIVE_TRANSFER_GAS,
                    Err(e) if !e.retryable => NATIVE_TRANSFER_GAS,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(token) => {
                let data = transfer_calldata(&intent.destination, intent.amount)?;
                let estimate = self.rpc.estimate_gas(from, token, 0, &data).await?;
                // A margin over the estimate: state may change before inclusion.
                estimate.saturating_add(estimate / 5)
            }
        };
        let quote = self.rpc.fee_quote().await?;
        let cap = intent.fee_cap.base_units();
        let wanted =
            quote.base_fee_per_gas.saturating_mul(2).saturating_add(quote.max_priority_fee_per_gas);
        // Pay at most the intent's cap; below the current base fee the transaction would
        // not be mined, so wait for fees to fall instead.
        let max_fee_per_gas = wanted.min(cap / u128::from(gas_limit.max(1)));
        if max_fee_per_gas
            < quote.base_fee_per_gas.saturating_add(quote.max_priority_fee_per_gas.min(1))
        {
            return Ok(Plan::Waiting(format!(
                "network fee (base {} wei/gas) is above the intent's cap of {cap} wei for {gas_limit} gas",
                quote.base_fee_per_gas
            )));
        }
        let params = EthParams {
            nonce: 0,
            gas_limit,
            max_fee_per_gas,
            max_priority_fee_per_gas: quote.max_priority_fee_per_gas.min(max_fee_per_gas),
        };
        let fee_reserve = params
            .max_fee()
            .and_then(|f| Amount::from_base_units(f).ok())
            .ok_or_else(|| ChainError::Build("fee overflows".into()))?;
        let codec = self.rpc.codec().clone();
        let planned = intent.clone();
        Ok(Plan::Ready(Planned {
            nonce_floor: self.rpc.nonce(from, true).await?,
            fee_reserve,
            coins: Vec::new(),
            build: Arc::new(move |nonce| {
                codec.build(&planned, &EthParams { nonce, ..params }).map_err(|e| e.to_string())
            }),
        }))
    }

    /// Twice the base fee and the tip per gas, for the gas the transfer is estimated at with
    /// a fifth more.
    async fn fee_cap(
        &self,
        _key: &[u8],
        from: &Address,
        to: &Address,
        contract: Option<&Address>,
        amount: Amount,
    ) -> Result<Amount, EngineError> {
        let quote = self.rpc.fee_quote().await?;
        let per_gas =
            quote.base_fee_per_gas.saturating_mul(2).saturating_add(quote.max_priority_fee_per_gas);
        let (target, value, data) = match contract {
            None => (to, amount.base_units(), Vec::new()),
            Some(token) => (token, 0, transfer_calldata(to, amount)?),
        };
        let estimate = self.rpc.estimate_gas(from, target, value, &data).await?;
        let gas = estimate.max(NATIVE_TRANSFER_GAS).saturating_add(estimate / 5);
        Amount::from_base_units(u128::from(gas).saturating_mul(per_gas))
            .map_err(|e| ChainError::Build(e.to_string()).into())
    }

    fn signatures(&self, _key: &[u8], unsigned: &[u8]) -> Result<usize, ChainError> {
        self.rpc.codec().digests(unsigned).map(|d| d.len())
    }

    fn attach(
        &self,
        key: &[u8],
        unsigned: &[u8],
        signatures: &[Vec<u8>],
    ) -> Result<SignedTx, ChainError> {
        self.rpc.codec().attach(unsigned, key, signatures)
    }
}

/// Bitcoin P2WPKH spends by the hot key (or a deposit child) through an Esplora server:
/// confirmed coins not reserved by another job, chosen largest first by the hot codec, at
/// the server's fee estimate; a fee above the intent's cap (which governance bounds, and the
/// nodes check) waits for fees to fall.
#[derive(Debug, Clone)]
pub struct BtcAdapter {
    client: Arc<BtcClient>,
    /// The confirmation target the fee rate is estimated for, in blocks.
    target_blocks: u16,
}

impl BtcAdapter {
    pub fn new(client: BtcClient, target_blocks: u16) -> Self {
        BtcAdapter { client: Arc::new(client), target_blocks }
    }

    pub fn btc(&self) -> &BtcClient {
        &self.client
    }

    fn codec(&self, key: &[u8]) -> Result<HotCodec, ChainError> {
        HotCodec::p2wpkh(self.client.chain().clone(), key)
    }

    fn network(&self) -> Result<strongroom_chain_bitcoin::bitcoin::Network, ChainError> {
        strongroom_chain_bitcoin::network(self.client.chain())
            .map_err(|e| ChainError::Build(e.to_string()))
    }
}

#[async_trait]
impl ChainAdapter for BtcAdapter {
    fn chain(&self) -> &ChainId {
        self.client.chain()
    }

    fn client(&self) -> Arc<dyn ChainClient> {
        self.client.clone()
    }

    fn address_of(&self, public_key: &[u8]) -> Result<Address, ChainError> {
        self.codec(public_key)?.own_address()
    }

    async fn plan(
        &self,
        job: &Job,
        key: &[u8],
        from: &Address,
        store: &dyn Store,
    ) -> Result<Plan, EngineError> {
        let codec = self.codec(key)?;
        let coins = self.client.coins(from, false).await?;
        let names: Vec<String> = coins.iter().map(|(u, _)| u.outpoint.to_string()).collect();
        let held = store.reserved_coins(self.chain(), &names).await?;
        let free: Vec<HotCoin> = coins
            .into_iter()
            .filter(|(u, _)| held.get(&u.outpoint.to_string()).is_none_or(|o| *o == job.id))
            .map(|(u, tx)| HotCoin { tx, vout: u.outpoint.vout })
            .collect();
        let total: u128 = free
            .iter()
            .filter_map(|c| c.tx.output.get(usize::try_from(c.vout).ok()?))
            .map(|o| u128::from(o.value.to_sat()))
            .sum();
        let amount = job.intent.amount.base_units();
        if total <= amount {
            return Ok(Plan::Waiting(format!(
                "the wallet's free confirmed coins hold {total} sat, not enough for {amount} sat and the fee"
            )));
        }
        let fee_rate = self.client.fee_rate(self.target_blocks).await?;
        let unsigned = match codec.build(&job.intent, &HotParams { coins: free, fee_rate }) {
            Ok(u) => u,
            Err(ChainError::FeeAboveCap { max_fee, cap }) => {
                return Ok(Plan::Waiting(format!(
                    "at {fee_rate} sat/vB the fee would be {max_fee} sat, above the intent's cap of {cap} sat"
                )))
            }
            Err(ChainError::Build(m)) if m.contains("not enough") => return Ok(Plan::Waiting(m)),
            Err(e) => return Err(e.into()),
        };
        let parsed = codec.parse(&unsigned)?;
        let spends = parsed.coins.iter().map(ToString::to_string).collect();
        Ok(Plan::Ready(Planned {
            nonce_floor: 0,
            // The most any version of it may pay (a fee bump needs no new reservation); the
            // fee the mined one paid is burned, the rest returns to the treasury.
            fee_reserve: job.intent.fee_cap.max(parsed.movement.max_fee),
            coins: spends,
            build: Arc::new(move |_| Ok(unsigned.clone())),
        }))
    }

    /// Twice today's estimate per vbyte, for a spend of every confirmed coin of `from` (the
    /// most inputs the planner could choose) with change.
    async fn fee_cap(
        &self,
        key: &[u8],
        from: &Address,
        to: &Address,
        contract: Option<&Address>,
        _amount: Amount,
    ) -> Result<Amount, EngineError> {
        if contract.is_some() {
            return Err(ChainError::Build("Bitcoin has no token contracts".into()).into());
        }
        let codec = self.codec(key)?;
        let rate = self.client.fee_rate(self.target_blocks).await?.saturating_mul(2);
        let a = strongroom_chain_bitcoin::address(from.as_str(), self.network()?)
            .map_err(|e| ChainError::Build(e.to_string()))?;
        let coins = self
            .client
            .esplora()
            .utxos(&a)
            .await
            .map_err(|e| ChainError::Build(e.to_string()))?
            .iter()
            .filter(|u| u.height.is_some())
            .count();
        let fee = codec.fee_for(coins.max(1), to, rate)?;
        Amount::from_base_units(u128::from(fee))
            .map_err(|e| ChainError::Build(e.to_string()).into())
    }

    fn signatures(&self, key: &[u8], unsigned: &[u8]) -> Result<usize, ChainError> {
        self.codec(key)?.digests(unsigned).map(|d| d.len())
    }

    /// The same coins at today's estimate. BIP-125 takes a replacement only if it pays more
    /// than the transaction it replaces by at least its own size at the minimum relay rate
    /// (1 sat/vB); a bump is made only when it pays a quarter more than that too, so that a
    /// small drift in the estimate sends nothing.
    async fn bump(
        &self,
        key: &[u8],
        intent: &strongroom_core::Intent,
        unsigned: &[u8],
    ) -> Result<Option<Vec<u8>>, EngineError> {
        use strongroom_chain_bitcoin::bitcoin::psbt::Psbt;
        let codec = self.codec(key)?;
        let current = codec.parse(unsigned)?;
        let psbt = Psbt::deserialize(unsigned)
            .map_err(|e| ChainError::Decode(format!("stored PSBT: {e}")))?;
        let coins = psbt
            .inputs
            .iter()
            .zip(&psbt.unsigned_tx.input)
            .map(|(i, txin)| {
                i.non_witness_utxo
                    .clone()
                    .map(|tx| HotCoin { tx, vout: txin.previous_output.vout })
                    .ok_or_else(|| {
                        ChainError::Decode("stored PSBT without a previous transaction".into())
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fee_rate = self.client.fee_rate(self.target_blocks).await?;
        let built = match codec.build(intent, &HotParams { coins, fee_rate }) {
            Ok(b) => b,
            // Dearer than the cap (or than the coins): the transaction waits as it is.
            Err(ChainError::FeeAboveCap { .. }) => return Ok(None),
            Err(ChainError::Build(m)) if m.contains("not enough") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let next = codec.parse(&built)?;
        if next.coins != current.coins {
            // Fewer coins would be another transaction, not a replacement: never.
            return Ok(None);
        }
        let (old, new) =
            (current.movement.max_fee.base_units(), next.movement.max_fee.base_units());
        // Its virtual size at 1 sat/vB, its change output (43 vB at most) included.
        let own_relay =
            u128::from(codec.fee_for(next.coins.len(), &intent.destination, 1)?).saturating_add(43);
        let enough = old.saturating_add(own_relay).max(old.saturating_add(old / 4));
        Ok((new >= enough).then_some(built))
    }

    fn attach(
        &self,
        key: &[u8],
        unsigned: &[u8],
        signatures: &[Vec<u8>],
    ) -> Result<SignedTx, ChainError> {
        self.codec(key)?.attach(unsigned, key, signatures)
    }
}
