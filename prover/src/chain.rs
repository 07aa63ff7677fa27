//! Deployment and verification on a real chain over JSON-RPC (alloy): the generated verifier,
//! the `ModelRegistry` (verifier-contracts/src/ModelRegistry.sol) and `verify` transactions.
//!
//! Every call is simulated with `eth_call` before it is sent, so a rejected proof comes back as
//! [`ProverError::Rejected`] naming the registry's error, without spending gas on a reverting
//! transaction.

use crate::error::ProverError;
use crate::evm::{compile_solidity, Bytecode};
pub use alloy::primitives::{Address, B256, U256};
use alloy::{
    network::{EthereumWallet, TransactionBuilder},
    primitives::{keccak256, Bytes, FixedBytes},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::TransactionRequest,
    signers::local::PrivateKeySigner,
    sol,
    sol_types::{SolCall, SolConstructor, SolInterface},
};
use std::path::Path;
use veriml_circuits::halo2_proofs::halo2curves::{bn256::Fr, ff::PrimeField};

sol! {
    /// The registry's external interface (verifier-contracts/src/ModelRegistry.sol).
    interface IModelRegistry {
        error NotOwner();
        error NotPendingOwner();
        error UnknownModel(bytes32 modelId);
        error NoCode(address verifier);
        error BadGasCap();
        error TooManyWords();
        error WrongInputCount(uint256 got, uint256 expected);
        error InputOutOfField(uint256 index);
        error ProofRejected(bytes32 modelId);

        function registerModel(
            bytes32 modelId,
            address verifier,
            bytes32 weightsHash,
            uint32 inputWords,
            uint32 outputWords,
            uint64 gasCap
        ) external;
        function verify(bytes32 modelId, uint256[] calldata publicInputs, bytes calldata proof)
            external
            returns (bytes32 resultId);
        function isVerified(bytes32 modelId, bytes32 inputHash, bytes32 outputHash)
            external
            view
            returns (bool);
    }

    /// The TEE registry's registration call (verifier-contracts/src/TeeRegistry.sol).
    interface ITeeRegistry {
        error QuorumNotReached(uint256 valid, uint256 needed);
        error AlreadyExpired();
        error MeasurementIsRevoked(bytes32 measurementHash);
        function registerEnclave(
            address key,
            bytes32 measurementHash,
            uint64 tcb,
            uint64 expiry,
            bytes[] calldata signatures
        ) external;
    }

    /// The registry's constructor, for deployment.
    contract ModelRegistryDeploy {
        constructor(address initialOwner);
    }
}

/// The registry's source, compiled on demand by [`registry_bytecode`].
pub const MODEL_REGISTRY_SOURCE: &str =
    include_str!("../../verifier-contracts/src/ModelRegistry.sol");

/// Compiles the bundled `ModelRegistry` (optimizer off, like the verifiers).
pub fn registry_bytecode(solc: &Path) -> Result<Bytecode, ProverError> {
    compile_solidity(solc, MODEL_REGISTRY_SOURCE, "ModelRegistry")
}

fn chain_err(stage: &'static str) -> impl Fn(String) -> ProverError {
    move |detail| ProverError::Chain { stage, detail }
}

/// A registry model id: a 32-byte hex value as is, anything else hashed with keccak-256.
pub fn model_id(name: &str) -> B256 {
    let hex = name.strip_prefix("0x").unwrap_or(name);
    if hex.len() == 64 {
        if let Ok(b) = hex::decode(hex) {
            return B256::from_slice(&b);
        }
    }
    keccak256(name.as_bytes())
}

/// A public word as the `uint256` the contracts read.
pub fn word(f: &Fr) -> U256 {
    let repr = f.to_repr();
    U256::from_le_slice(repr.as_ref())
}

/// DIR/deployment.json: what `veriml deploy` put on chain, read back by `verify-evm --rpc` and
/// by the model catalogue.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub chain_id: u64,
    pub registry: String,
    pub verifier: String,
    pub model_id: String,
    pub model_sha256: String,
    pub input_words: u32,
    pub output_words: u32,
    pub gas_cap: u64,
    pub verifier_deploy_gas: u64,
    pub register_gas: u64,
    /// Gas of deploying the registry, when this deployment created it.
    pub registry_deploy_gas: Option<u64>,
}

/// The keccak-256 hashes the registry records for a result: of the input words, then of the
/// output words (each `abi.encodePacked` of `uint256`s).
pub fn result_hashes(words: &[U256], input_words: usize) -> (B256, B256) {
    let packed = |ws: &[U256]| -> Vec<u8> {
        ws.iter()
            .flat_map(|w| w.to_be_bytes::<32>().to_vec())
            .collect()
    };
    (
        keccak256(packed(&words[..input_words])),
        keccak256(packed(&words[input_words..])),
    )
}

/// A mined transaction's cost.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mined {
    pub tx_hash: String,
    pub gas_used: u64,
}

/// A connection to a node with a funded signing key.
#[derive(Clone)]
pub struct Chain {
    provider: DynProvider,
    pub from: Address,
    pub chain_id: u64,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("from", &self.from)
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

fn revert_reason(e: &alloy::contract::Error) -> String {
    if let Some(data) = e.as_revert_data() {
        if let Ok(err) = IModelRegistry::IModelRegistryErrors::abi_decode(&data) {
            return match err {
                IModelRegistry::IModelRegistryErrors::UnknownModel(_) => "unknown model".into(),
                IModelRegistry::IModelRegistryErrors::NoCode(x) => {
                    format!("no contract code at verifier {}", x.verifier)
                }
                IModelRegistry::IModelRegistryErrors::WrongInputCount(x) => {
                    format!("{} public words, the model has {}", x.got, x.expected)
                }
                IModelRegistry::IModelRegistryErrors::InputOutOfField(x) => {
                    format!(
                        "public word {} is not below the BN254 scalar modulus",
                        x.index
                    )
                }
                IModelRegistry::IModelRegistryErrors::ProofRejected(_) => {
                    "the on-chain verifier rejected the proof".into()
                }
                IModelRegistry::IModelRegistryErrors::NotOwner(_) => {
                    "the sender does not own the registry".into()
                }
                IModelRegistry::IModelRegistryErrors::BadGasCap(_) => {
                    "gas cap outside [100000, 15000000]".into()
                }
                IModelRegistry::IModelRegistryErrors::NotPendingOwner(_) => {
                    "the sender is not the pending owner".into()
                }
                IModelRegistry::IModelRegistryErrors::TooManyWords(_) => {
                    "more than 65535 input or output words".into()
                }
            };
        }
        if let Ok(err) = ITeeRegistry::ITeeRegistryErrors::abi_decode(&data) {
            return match err {
                ITeeRegistry::ITeeRegistryErrors::QuorumNotReached(x) => format!(
                    "{} valid attestation-verifier signatures, the registry needs {}",
                    x.valid, x.needed
                ),
                ITeeRegistry::ITeeRegistryErrors::AlreadyExpired(_) => {
                    "the expiry is in the past".into()
                }
                ITeeRegistry::ITeeRegistryErrors::MeasurementIsRevoked(x) => {
                    format!("measurement {} is revoked", x.measurementHash)
                }
            };
        }
        return format!("reverted with data 0x{}", hex::encode(&data));
    }
    e.to_string()
}

impl Chain {
    /// Connects to `rpc_url` and signs with `private_key` (hex).
    pub async fn connect(rpc_url: &str, private_key: &str) -> Result<Chain, ProverError> {
        let signer: PrivateKeySigner =
            private_key.trim().parse().map_err(|e| ProverError::Chain {
                stage: "reading the private key",
                detail: format!("{e}"),
            })?;
        let from = signer.address();
        let url = rpc_url.parse().map_err(|e| ProverError::Chain {
            stage: "reading the RPC URL",
            detail: format!("{rpc_url}: {e}"),
        })?;
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(url)
            .erased();
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| chain_err("asking the chain id")(e.to_string()))?;
        Ok(Chain {
            provider,
            from,
            chain_id,
        })
    }

    async fn send(
        &self,
        tx: TransactionRequest,
        stage: &'static str,
    ) -> Result<(Mined, Option<Address>), ProverError> {
        let pending = self
            .provider
            .send_transaction(tx.from(self.from))
            .await
            .map_err(|e| chain_err(stage)(e.to_string()))?;
        let receipt = pending
            .get_receipt()
            .await
            .map_err(|e| chain_err(stage)(e.to_string()))?;
        if !receipt.status() {
            return Err(chain_err(stage)(format!(
                "transaction {} reverted",
                receipt.transaction_hash
            )));
        }
        Ok((
            Mined {
                tx_hash: receipt.transaction_hash.to_string(),
                gas_used: receipt.gas_used,
            },
            receipt.contract_address,
        ))
    }

    /// Deploys creation code; returns the new contract's address.
    pub async fn deploy(&self, creation: Vec<u8>) -> Result<(Address, Mined), ProverError> {
        let tx = TransactionRequest::default().with_deploy_code(Bytes::from(creation));
        let (mined, addr) = self.send(tx, "deploying a contract").await?;
        let addr = addr.ok_or_else(|| {
            chain_err("deploying a contract")("no contract address in the receipt".into())
        })?;
        Ok((addr, mined))
    }

    /// Deploys a `ModelRegistry` owned by the sender.
    pub async fn deploy_registry(
        &self,
        registry: &Bytecode,
    ) -> Result<(Address, Mined), ProverError> {
        let mut code = hex::decode(&registry.creation)
            .map_err(|e| chain_err("deploying the registry")(e.to_string()))?;
        code.extend(
            ModelRegistryDeploy::constructorCall {
                initialOwner: self.from,
            }
            .abi_encode(),
        );
        self.deploy(code).await
    }

    /// Registers `verifier` under `model_id` (the sender must own the registry).
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        registry: Address,
        model_id: B256,
        verifier: Address,
        weights_hash: B256,
        input_words: u32,
        output_words: u32,
        gas_cap: u64,
    ) -> Result<Mined, ProverError> {
        let call = IModelRegistry::registerModelCall {
            modelId: model_id,
            verifier,
            weightsHash: weights_hash,
            inputWords: input_words,
            outputWords: output_words,
            gasCap: gas_cap,
        };
        self.call_then_send(registry, call.abi_encode(), "registering the model")
            .await
    }

    /// `registry.verify(model_id, words, proof)`: simulated first (a rejection names the
    /// registry's error), then sent. Returns the transaction's cost.
    pub async fn verify(
        &self,
        registry: Address,
        model_id: B256,
        words: &[U256],
        proof: &[u8],
    ) -> Result<Mined, ProverError> {
        let call = IModelRegistry::verifyCall {
            modelId: model_id,
            publicInputs: words.to_vec(),
            proof: Bytes::copy_from_slice(proof),
        };
        self.call_then_send(registry, call.abi_encode(), "verifying the proof")
            .await
    }

    /// Registers a TEE runner's key in a `TeeRegistry` with the attestation verifiers'
    /// signatures of its registration.
    pub async fn register_enclave(
        &self,
        registry: Address,
        key: Address,
        measurement_hash: B256,
        tcb: u64,
        expiry: u64,
        signatures: Vec<Vec<u8>>,
    ) -> Result<Mined, ProverError> {
        let call = ITeeRegistry::registerEnclaveCall {
            key,
            measurementHash: measurement_hash,
            tcb,
            expiry,
            signatures: signatures.into_iter().map(Bytes::from).collect(),
        };
        self.call_then_send(registry, call.abi_encode(), "registering the runner's key")
            .await
    }

    /// Whether the registry recorded this result.
    pub async fn is_verified(
        &self,
        registry: Address,
        model_id: B256,
        input_hash: B256,
        output_hash: B256,
    ) -> Result<bool, ProverError> {
        let call = IModelRegistry::isVerifiedCall {
            modelId: model_id,
            inputHash: input_hash,
            outputHash: output_hash,
        };
        let tx = TransactionRequest::default()
            .to(registry)
            .input(call.abi_encode().into());
        let out = self
            .provider
            .call(tx)
            .await
            .map_err(|e| chain_err("reading a result")(e.to_string()))?;
        IModelRegistry::isVerifiedCall::abi_decode_returns(&out)
            .map_err(|e| chain_err("reading a result")(e.to_string()))
    }

    /// Calls a verifier contract directly with `words ‖ proof`; success means no revert and
    /// empty return data. Returns the transaction's cost.
    pub async fn verify_direct(
        &self,
        verifier: Address,
        words: &[U256],
        proof: &[u8],
    ) -> Result<Mined, ProverError> {
        let mut data: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes::<32>()).collect();
        data.extend_from_slice(proof);
        let tx = TransactionRequest::default()
            .to(verifier)
            .input(data.clone().into());
        match self.provider.call(tx).await {
            Ok(ret) if ret.is_empty() => {}
            Ok(ret) => {
                return Err(ProverError::Rejected(format!(
                    "the verifier returned {} bytes instead of none",
                    ret.len()
                )))
            }
            Err(e) => return Err(ProverError::Rejected(format!("the verifier reverted: {e}"))),
        }
        let tx = TransactionRequest::default()
            .to(verifier)
            .input(data.into());
        Ok(self.send(tx, "calling the verifier").await?.0)
    }

    async fn call_then_send(
        &self,
        to: Address,
        data: Vec<u8>,
        stage: &'static str,
    ) -> Result<Mined, ProverError> {
        let tx = TransactionRequest::default()
            .to(to)
            .from(self.from)
            .input(data.clone().into());
        if let Err(e) = self.provider.call(tx.clone()).await {
            let err = alloy::contract::Error::from(e);
            return Err(ProverError::Rejected(revert_reason(&err)));
        }
        Ok(self.send(tx, stage).await?.0)
    }
}

/// A `bytes32` from a hex SHA-256 string (the settings' weights hash).
pub fn bytes32_from_hex(s: &str) -> Option<B256> {
    let b = hex::decode(s.trim_start_matches("0x")).ok()?;
    (b.len() == 32).then(|| FixedBytes::from_slice(&b))
}
