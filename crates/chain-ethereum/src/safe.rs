//! Safe (v1.4.1) multisig transactions for Ethereum cold wallets: the EIP-712 Safe
//! transaction hash the owners sign, the decoder every signer runs before signing, owner
//! signatures, the `execTransaction` call that carries them, and a new Safe's deployment
//! through the standard `SafeProxyFactory` ([`SafeDeployment`]), whose address is known
//! before it is deployed, as Safe{Wallet} and the Safe SDK compute it.
//!
//! The decoder accepts exactly one shape per intent and refuses everything else by name:
//! `DELEGATECALL` (the Bybit theft: a delegatecall behind an innocent-looking transfer
//! rewrote the Safe's implementation), calls to the Safe itself (owner, threshold, module,
//! guard and fallback-handler changes), gas refunds (they pay the executor out of the
//! Safe), and any call but the intended transfer.

use alloy_primitives::{address, b256, keccak256};
pub use alloy_primitives::{Address as EthAddress, Bytes, B256, U256};
use alloy_sol_types::{eip712_domain, sol, SolCall, SolStruct};
use strongroom_chain::ChainError;
use strongroom_core::Intent;

use crate::{eth_address, transfer_calldata};

sol! {
    /// The struct a Safe hashes (EIP-712) and its owners sign.
    #[derive(Debug, PartialEq, Eq)]
    struct SafeTx {
        address to;
        uint256 value;
        bytes data;
        uint8 operation;
        uint256 safeTxGas;
        uint256 baseGas;
        uint256 gasPrice;
        address gasToken;
        address refundReceiver;
        uint256 nonce;
    }

    /// The Safe's own functions this module calls or names.
    interface ISafe {
        function setup(address[] _owners, uint256 _threshold, address to, bytes data, address fallbackHandler, address paymentToken, uint256 payment, address paymentReceiver) external;
        function execTransaction(address to, uint256 value, bytes data, uint8 operation, uint256 safeTxGas, uint256 baseGas, uint256 gasPrice, address gasToken, address refundReceiver, bytes signatures) external payable returns (bool success);
        function getTransactionHash(address to, uint256 value, bytes data, uint8 operation, uint256 safeTxGas, uint256 baseGas, uint256 gasPrice, address gasToken, address refundReceiver, uint256 _nonce) external view returns (bytes32);
        function nonce() external view returns (uint256);
        function getOwners() external view returns (address[]);
        function getThreshold() external view returns (uint256);
        function VERSION() external view returns (string);
        event ExecutionSuccess(bytes32 indexed txHash, uint256 payment);
        function addOwnerWithThreshold(address owner, uint256 _threshold) external;
        function removeOwner(address prevOwner, address owner, uint256 _threshold) external;
        function swapOwner(address prevOwner, address oldOwner, address newOwner) external;
        function changeThreshold(uint256 _threshold) external;
        function enableModule(address module) external;
        function disableModule(address prevModule, address module) external;
        function setGuard(address guard) external;
        function setFallbackHandler(address handler) external;
    }

    /// The standard factory Safe{Wallet} and the Safe SDK deploy Safes through
    /// (`SafeProxyFactory.sol`, v1.4.1).
    interface ISafeProxyFactory {
        event ProxyCreation(address indexed proxy, address singleton);
        function createProxyWithNonce(address _singleton, bytes initializer, uint256 saltNonce) external returns (address proxy);
        function proxyCreationCode() external pure returns (bytes);
    }
}

/// The Safe version this module speaks (the `VERSION` a deployed Safe reports).
pub const SAFE_VERSION: &str = "1.4.1";

/// Where a Safe keeps its fallback handler's address (`FallbackManager.sol`:
/// `keccak256("fallback_manager.handler.address")`).
pub const FALLBACK_HANDLER_STORAGE_SLOT: B256 =
    b256!("6c9a6c4a39284e37ed1cf53d337577d14212a4870fb976a4366c693b939918d5");

/// At most this many owners in a Safe this platform deploys (Safe itself sets no bound).
pub const MAX_OWNERS: usize = 32;

/// The contracts a Safe is deployed with: the singleton its proxy delegates to, the factory
/// that creates the proxy, and the fallback handler `setup` installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafeContracts {
    pub singleton: EthAddress,
    pub factory: EthAddress,
    pub fallback_handler: EthAddress,
}

impl SafeContracts {
    /// Safe 1.4.1's canonical deployment (`safe-deployments`: the same addresses on every
    /// chain it is deployed to) with the L1 singleton, `Safe`.
    pub const CANONICAL: SafeContracts = SafeContracts {
        singleton: address!("41675C099F32341bf84BFc5382aF534df5C7461a"),
        factory: address!("4e1DCf7AD4e460CfD30791CCC4F9c8a4f820ec67"),
        fallback_handler: address!("fd0732Dc9E303f09fCEf3a7388Ad10A83459Ec99"),
    };
    /// The same with the L2 singleton, `SafeL2` (it also emits an event per transaction),
    /// which Safe{Wallet} uses on L2 chains.
    pub const CANONICAL_L2: SafeContracts = SafeContracts {
        singleton: address!("29fcB43b46531BcA003ddC8FCB67FFE91900C762"),
        factory: SafeContracts::CANONICAL.factory,
        fallback_handler: SafeContracts::CANONICAL.fallback_handler,
    };
}

/// keccak256 of the runtime code of Safe 1.4.1's release contracts, as the canonical
/// deployment and the npm package `@safe-global/safe-contracts` 1.4.1 both have them (the
/// dev contracts deployed from that package hash the same). A contract at a Safe address
/// whose code hashes to anything else is not the release, whatever its address.
pub mod code_hash {
    use super::{b256, B256};
    /// `Safe` (the L1 singleton).
    pub const SINGLETON: B256 =
        b256!("1fe2df852ba3299d6534ef416eefa406e56ced995bca886ab7a553e6d0c5e1c4");
    /// `SafeL2`.
    pub const SINGLETON_L2: B256 =
        b256!("b1f926978a0f44a2c0ec8fe822418ae969bd8c3f18d61e5103100339894f81ff");
    /// `SafeProxyFactory`.
    pub const FACTORY: B256 =
        b256!("50c3cdc4074750a7a974204a716c999edd37482f907608d960b2b025ee0b3317");
    /// `CompatibilityFallbackHandler`.
    pub const FALLBACK_HANDLER: B256 =
        b256!("7c6007a5d711cea8dfd5d91f5940ec29c7f200fe511eb1fc1397b367af3c42f9");
    /// A `SafeProxy` the factory made (the same code at every address).
    pub const PROXY: B256 =
        b256!("d7d408ebcd99b2b70be43e20253d6d92a8ea8fab29bd3be7f55b10032331fb4c");
}

/// A new Safe: its owners and threshold, the contracts it is made with, and the salt nonce
/// that, with the initializer, picks its address. It is created by one call,
/// `factory.createProxyWithNonce(singleton, initializer, saltNonce)` with `setup(…)` as the
/// initializer, as Safe{Wallet} and the Safe SDK do: there is no moment at which a proxy
/// exists that someone else could set up first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeDeployment {
    contracts: SafeContracts,
    owners: Vec<EthAddress>,
    threshold: u64,
    salt_nonce: U256,
}

impl SafeDeployment {
    /// A `threshold`-of-`owners` Safe. The owners keep their order: it is part of the
    /// initializer, so of the address. Refused as `setup` would refuse it (no owner, a zero
    /// or sentinel `0x…01` owner, an owner named twice, a threshold of zero or above the
    /// number of owners) and with more than [`MAX_OWNERS`] owners.
    pub fn new(
        contracts: SafeContracts,
        owners: Vec<EthAddress>,
        threshold: u64,
        salt_nonce: U256,
    ) -> Result<Self, ChainError> {
        let bad = |why: String| ChainError::Build(format!("not a valid Safe: {why}"));
        if owners.is_empty() || owners.len() > MAX_OWNERS {
            return Err(bad(format!("{} owners (1 to {MAX_OWNERS})", owners.len())));
        }
        let sentinel = EthAddress::with_last_byte(1);
        for (n, o) in owners.iter().enumerate() {
            if *o == EthAddress::ZERO || *o == sentinel {
                return Err(bad(format!("{o} cannot be an owner")));
            }
            if owners.iter().take(n).any(|p| p == o) {
                return Err(bad(format!("{o} is named twice: a Safe needs distinct owners")));
            }
        }
        let n = u64::try_from(owners.len()).unwrap_or(u64::MAX);
        if threshold == 0 || threshold > n {
            return Err(bad(format!("a {threshold}-of-{n} Safe (the threshold must be 1 to {n})")));
        }
        Ok(SafeDeployment { contracts, owners, threshold, salt_nonce })
    }

    pub fn contracts(&self) -> &SafeContracts {
        &self.contracts
    }
    pub fn owners(&self) -> &[EthAddress] {
        &self.owners
    }
    pub fn threshold(&self) -> u64 {
        self.threshold
    }
    pub fn salt_nonce(&self) -> U256 {
        self.salt_nonce
    }

    /// The initializer: `setup(owners, threshold, to = 0, data = 0x, fallbackHandler,
    /// paymentToken = 0, payment = 0, paymentReceiver = 0)`, as Safe{Wallet} encodes it.
    pub fn initializer(&self) -> Vec<u8> {
        setup_calldata(&self.owners, self.threshold, self.contracts.fallback_handler)
    }

    /// The `CREATE2` salt the factory uses: `keccak256(keccak256(initializer) ‖ saltNonce)`
    /// (`SafeProxyFactory.createProxyWithNonce`, `saltNonce` as a 32-byte word).
    pub fn salt(&self) -> B256 {
        let mut packed = [0u8; 64];
        let (hash, nonce) = packed.split_at_mut(32);
        hash.copy_from_slice(keccak256(self.initializer()).as_slice());
        nonce.copy_from_slice(&self.salt_nonce.to_be_bytes::<32>());
        keccak256(packed)
    }

    /// The Safe's address before it exists: `CREATE2` by the factory with [`Self::salt`] over
    /// the proxy's creation code (what `factory.proxyCreationCode()` returns) followed by the
    /// singleton's address as one 32-byte word (`SafeProxyFactory.deployProxy`).
    pub fn predict_address(&self, proxy_creation_code: &[u8]) -> EthAddress {
        let mut init_code = Vec::with_capacity(proxy_creation_code.len().saturating_add(32));
        init_code.extend_from_slice(proxy_creation_code);
        init_code.extend_from_slice(
            B256::left_padding_from(self.contracts.singleton.as_slice()).as_slice(),
        );
        self.contracts.factory.create2_from_code(self.salt(), init_code)
    }

    /// The call data of `factory.createProxyWithNonce(singleton, initializer, saltNonce)`.
    pub fn create_calldata(&self) -> Vec<u8> {
        ISafeProxyFactory::createProxyWithNonceCall {
            _singleton: self.contracts.singleton,
            initializer: Bytes::from(self.initializer()),
            saltNonce: self.salt_nonce,
        }
        .abi_encode()
    }
}

/// `operation` values: a call, or a delegatecall (never signed).
pub const CALL: u8 = 0;
pub const DELEGATECALL: u8 = 1;

/// The transaction hash the Safe at `safe` on `chain_id` computes for `tx`
/// (`getTransactionHash`): EIP-712 over the domain `(chainId, verifyingContract)`.
pub fn safe_tx_hash(chain_id: u64, safe: EthAddress, tx: &SafeTx) -> [u8; 32] {
    let domain = eip712_domain! { chain_id: chain_id, verifying_contract: safe, };
    tx.eip712_signing_hash(&domain).0
}

/// The plain transfer the intent names, as a Safe transaction with `nonce`: native ETH is
/// a call with value and no data, an ERC-20 a `transfer` call to the token contract. No
/// gas refund: the executor pays its own gas.
pub fn transfer_tx(intent: &Intent, nonce: u64) -> Result<SafeTx, ChainError> {
    let dest = eth_address(&intent.destination)?;
    let amount = U256::from(intent.amount.base_units());
    let (to, value, data) = match &intent.asset.contract {
        None => (dest, amount, Bytes::new()),
        Some(token) => (
            eth_address(token)?,
            U256::ZERO,
            Bytes::from(transfer_calldata(&intent.destination, intent.amount)?),
        ),
    };
    Ok(SafeTx {
        to,
        value,
        data,
        operation: CALL,
        safeTxGas: U256::ZERO,
        baseGas: U256::ZERO,
        gasPrice: U256::ZERO,
        gasToken: EthAddress::ZERO,
        refundReceiver: EthAddress::ZERO,
        nonce: U256::from(nonce),
    })
}

fn refuse(why: String) -> ChainError {
    ChainError::Decode(why)
}

/// The name of the Safe admin function `data` calls, if it is one.
fn admin_call(data: &[u8]) -> Option<&'static str> {
    let selector: [u8; 4] = data.get(..4)?.try_into().ok()?;
    [
        (ISafe::addOwnerWithThresholdCall::SELECTOR, "addOwnerWithThreshold (an owner change)"),
        (ISafe::removeOwnerCall::SELECTOR, "removeOwner (an owner change)"),
        (ISafe::swapOwnerCall::SELECTOR, "swapOwner (an owner change)"),
        (ISafe::changeThresholdCall::SELECTOR, "changeThreshold (a threshold change)"),
        (ISafe::enableModuleCall::SELECTOR, "enableModule (a module change)"),
        (ISafe::disableModuleCall::SELECTOR, "disableModule (a module change)"),
        (ISafe::setGuardCall::SELECTOR, "setGuard (a guard change)"),
        (ISafe::setFallbackHandlerCall::SELECTOR, "setFallbackHandler (a handler change)"),
        (ISafe::execTransactionCall::SELECTOR, "execTransaction (a nested Safe transaction)"),
    ]
    .into_iter()
    .find(|(s, _)| *s == selector)
    .map(|(_, name)| name)
}

/// Check that `tx`, to be executed by the Safe at `safe`, is exactly the transfer `intent`
/// names (see the module documentation for what is refused).
pub fn check_safe_tx(tx: &SafeTx, safe: EthAddress, intent: &Intent) -> Result<(), ChainError> {
    if tx.operation == DELEGATECALL {
        return Err(refuse(format!(
            "operation is DELEGATECALL to {}: it would run that contract's code as the Safe itself (the Bybit attack)",
            tx.to
        )));
    }
    if tx.operation != CALL {
        return Err(refuse(format!("operation {} is not a call", tx.operation)));
    }
    if tx.to == safe {
        let what = admin_call(&tx.data).unwrap_or("an unknown function");
        return Err(refuse(format!("the transaction calls the Safe itself: {what}")));
    }
    if !tx.gasPrice.is_zero()
        || !tx.baseGas.is_zero()
        || tx.gasToken != EthAddress::ZERO
        || tx.refundReceiver != EthAddress::ZERO
    {
        return Err(refuse(
            "a gas refund paid by the Safe (gasPrice, baseGas, gasToken or refundReceiver set)"
                .into(),
        ));
    }
    if !tx.safeTxGas.is_zero() {
        return Err(refuse("safeTxGas is set (only 0 is signed)".into()));
    }
    let want = transfer_tx(intent, 0)?;
    let mismatch = |field: &'static str, t: String, i: String| ChainError::Mismatch {
        field,
        tx: t,
        intent: i,
    };
    if tx.to != want.to {
        return Err(mismatch("to", tx.to.to_string(), want.to.to_string()));
    }
    if tx.value != want.value {
        return Err(mismatch("value", tx.value.to_string(), want.value.to_string()));
    }
    if tx.data != want.data {
        return Err(mismatch(
            "data",
            format!("0x{}", hex::encode(&tx.data)),
            format!("0x{}", hex::encode(&want.data)),
        ));
    }
    Ok(())
}

/// An owner's signature on a Safe transaction hash: `r || s || v` with `v` = 27 or 28 and
/// a low `s`, the form `checkSignatures` takes for an ECDSA signature of the hash itself.
pub fn sign_hash(hash: &[u8; 32], key: &k256::ecdsa::SigningKey) -> Result<[u8; 65], ChainError> {
    let (sig, recid) =
        key.sign_prehash_recoverable(hash).map_err(|e| ChainError::Signature(e.to_string()))?;
    let (sig, recid) = match sig.normalize_s() {
        Some(low) => (low, k256::ecdsa::RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced())),
        None => (sig, recid),
    };
    let mut out = [0u8; 65];
    let (rs, v) = out.split_at_mut(64);
    rs.copy_from_slice(&sig.to_bytes());
    if let Some(v) = v.first_mut() {
        *v = 27 + recid.to_byte();
    }
    Ok(out)
}

/// The owner whose key made `sig` over `hash`.
pub fn recover_owner(hash: &[u8; 32], sig: &[u8; 65]) -> Result<EthAddress, ChainError> {
    let bad = |why: &str| ChainError::Signature(why.to_owned());
    let (rs, v) = sig.split_at(64);
    let v = v.first().copied().ok_or_else(|| bad("short signature"))?;
    let recid = k256::ecdsa::RecoveryId::from_byte(v.wrapping_sub(27))
        .ok_or_else(|| bad("v is not 27 or 28"))?;
    let sig = k256::ecdsa::Signature::from_slice(rs).map_err(|_| bad("malformed signature"))?;
    if sig.normalize_s().is_some() {
        return Err(bad("high s"));
    }
    let key = k256::ecdsa::VerifyingKey::recover_from_prehash(hash, &sig, recid)
        .map_err(|_| bad("does not recover"))?;
    Ok(EthAddress::from_public_key(&key))
}

/// The Ethereum address of a secp256k1 signing key.
pub fn address_of_key(key: &k256::ecdsa::SigningKey) -> EthAddress {
    EthAddress::from_public_key(key.verifying_key())
}

/// `execTransaction` call data for `tx` with owners' signatures, sorted by owner address
/// ascending as the Safe requires.
pub fn exec_calldata(tx: &SafeTx, signatures: &[(EthAddress, [u8; 65])]) -> Vec<u8> {
    let mut sigs = signatures.to_vec();
    sigs.sort_by_key(|(owner, _)| *owner);
    sigs.dedup_by_key(|(owner, _)| *owner);
    let packed: Vec<u8> = sigs.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    ISafe::execTransactionCall {
        to: tx.to,
        value: tx.value,
        data: tx.data.clone(),
        operation: tx.operation,
        safeTxGas: tx.safeTxGas,
        baseGas: tx.baseGas,
        gasPrice: tx.gasPrice,
        gasToken: tx.gasToken,
        refundReceiver: tx.refundReceiver,
        signatures: Bytes::from(packed),
    }
    .abi_encode()
}

/// `setup` call data for a new Safe: `owners`, `threshold`, no module (no delegatecall
/// during setup), `fallback_handler`, no payment.
pub fn setup_calldata(
    owners: &[EthAddress],
    threshold: u64,
    fallback_handler: EthAddress,
) -> Vec<u8> {
    ISafe::setupCall {
        _owners: owners.to_vec(),
        _threshold: U256::from(threshold),
        to: EthAddress::ZERO,
        data: Bytes::new(),
        fallbackHandler: fallback_handler,
        paymentToken: EthAddress::ZERO,
        payment: U256::ZERO,
        paymentReceiver: EthAddress::ZERO,
    }
    .abi_encode()
}

/// `getTransactionHash` call data, to ask a deployed Safe for its own hash of `tx`.
pub fn get_transaction_hash_calldata(tx: &SafeTx) -> Vec<u8> {
    ISafe::getTransactionHashCall {
        to: tx.to,
        value: tx.value,
        data: tx.data.clone(),
        operation: tx.operation,
        safeTxGas: tx.safeTxGas,
        baseGas: tx.baseGas,
        gasPrice: tx.gasPrice,
        gasToken: tx.gasToken,
        refundReceiver: tx.refundReceiver,
        _nonce: tx.nonce,
    }
    .abi_encode()
}

/// Call data of the Safe's view functions.
pub fn nonce_calldata() -> Vec<u8> {
    ISafe::nonceCall {}.abi_encode()
}
pub fn get_owners_calldata() -> Vec<u8> {
    ISafe::getOwnersCall {}.abi_encode()
}
pub fn get_threshold_calldata() -> Vec<u8> {
    ISafe::getThresholdCall {}.abi_encode()
}
pub fn version_calldata() -> Vec<u8> {
    ISafe::VERSIONCall {}.abi_encode()
}

/// keccak256, for callers that build Safe data by hand (tests of the decoder).
pub fn keccak(data: &[u8]) -> [u8; 32] {
    keccak256(data).0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_type_hashes_are_safes() {
        // SAFE_TX_TYPEHASH and DOMAIN_SEPARATOR_TYPEHASH as Safe.sol 1.4.1 defines them.
        let tx = transfer_tx_for_test();
        assert_eq!(
            hex::encode(tx.eip712_type_hash()),
            "bb8310d486368db6bd6f849402fdd73ad53d316b5a4b2644ad6efe0f941286d8"
        );
        let domain = eip712_domain! { chain_id: 1, verifying_contract: EthAddress::ZERO, };
        assert_eq!(
            hex::encode(keccak256(domain.encode_type().as_bytes())),
            "47e79534a245952e8b16893a336b85a3d9ea9fa8c573f3d803afb92a79469218"
        );
    }

    fn transfer_tx_for_test() -> SafeTx {
        SafeTx {
            to: EthAddress::repeat_byte(0x11),
            value: U256::from(1u64),
            data: Bytes::new(),
            operation: CALL,
            safeTxGas: U256::ZERO,
            baseGas: U256::ZERO,
            gasPrice: U256::ZERO,
            gasToken: EthAddress::ZERO,
            refundReceiver: EthAddress::ZERO,
            nonce: U256::ZERO,
        }
    }

    #[test]
    fn signatures_recover_to_their_owner_and_sort_by_owner() {
        let hash = safe_tx_hash(31337, EthAddress::repeat_byte(0x22), &transfer_tx_for_test());
        let keys: Vec<k256::ecdsa::SigningKey> =
            (1u8..=3).map(|n| k256::ecdsa::SigningKey::from_slice(&[n; 32]).unwrap()).collect();
        let mut sigs = Vec::new();
        for k in &keys {
            let s = sign_hash(&hash, k).unwrap();
            assert!(s[64] == 27 || s[64] == 28);
            assert_eq!(recover_owner(&hash, &s).unwrap(), address_of_key(k));
            sigs.push((address_of_key(k), s));
        }
        let mut other = hash;
        other[0] ^= 1;
        assert_ne!(recover_owner(&other, &sigs[0].1).unwrap(), sigs[0].0);
        let data = exec_calldata(&transfer_tx_for_test(), &[sigs[2], sigs[0], sigs[1]]);
        let call = ISafe::execTransactionCall::abi_decode(&data).unwrap();
        let owners: Vec<EthAddress> = call
            .signatures
            .chunks(65)
            .map(|c| recover_owner(&hash, c.try_into().unwrap()).unwrap())
            .collect();
        let mut sorted = owners.clone();
        sorted.sort();
        assert_eq!(owners, sorted);
        assert_eq!(owners.len(), 3);
    }
}
