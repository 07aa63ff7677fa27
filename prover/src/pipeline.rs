//! Setup, proving, verification and the mock prover.

use crate::artifacts::{
    decode_key, encode_key, KeyHeader, ProofFile, ARTIFACT_VERSION, PK_MAGIC, PROOF_FORMAT,
    PROOF_SYSTEM, TRANSCRIPT, VK_MAGIC,
};
use crate::engine::{EngineParams, EngineShplonk, VeriKzg};
use crate::error::ProverError;
use crate::msm::MsmChoice;
use crate::srs::{Srs, SrsOrigin};
use halo2_proofs::{
    dev::MockProver,
    halo2curves::{
        bn256::{Bn256, Fr, G1Affine},
        ff::PrimeField,
    },
    plonk::{create_proof, keygen_pk, keygen_vk, verify_proof, ProvingKey, VerifyingKey},
    poly::{
        commitment::{Params, ParamsProver},
        kzg::{
            commitment::{KZGCommitmentScheme, ParamsKZG},
            multiopen::{ProverSHPLONK, VerifierSHPLONK},
            strategy::AccumulatorStrategy,
        },
        VerificationStrategy,
    },
    transcript::{TranscriptReadBuffer, TranscriptWriterBuffer},
    SerdeFormat,
};
use snark_verifier_sdk::{
    snark_verifier::system::halo2::transcript::evm::EvmTranscript, NativeLoader,
};
use std::path::Path;
use std::sync::Arc;
use veriml_circuits::{
    circuit::{fr_from_i128, input_digest},
    halo2_proofs,
    settings::DecodedInput,
    ModelCircuit, QuantizedModel, Settings,
};

/// A proving key with its header.
#[derive(Debug)]
pub struct Keys {
    pub pk: ProvingKey<G1Affine>,
    pub header: KeyHeader,
}

fn halo2_err(stage: &'static str) -> impl Fn(halo2_proofs::plonk::Error) -> ProverError {
    move |e| ProverError::Halo2 {
        stage,
        detail: format!("{e:?}"),
    }
}

fn check_header(
    header: &KeyHeader,
    settings: &Settings,
    what: &'static str,
) -> Result<(), ProverError> {
    if header.settings_sha256 != settings.sha256() {
        return Err(ProverError::Mismatch {
            what,
            detail: format!(
                "it was made for settings {} but these settings hash to {}",
                header.settings_sha256,
                settings.sha256()
            ),
        });
    }
    if header.model_sha256 != settings.model_sha256 {
        return Err(ProverError::Mismatch {
            what,
            detail: format!(
                "it was made for compiled model {} but the settings name {}",
                header.model_sha256, settings.model_sha256
            ),
        });
    }
    Ok(())
}

/// Checks that `srs` is the SRS a key was made with (the hash its header records), and refuses
/// a development SRS unless `allow_insecure`: one recognised from the parameters themselves as
/// well as one the header admits to, so an edited header does not pass it off as a ceremony's.
pub fn check_srs(header: &KeyHeader, srs: &Srs, allow_insecure: bool) -> Result<(), ProverError> {
    if header.srs_sha256 != srs.sha256 {
        return Err(ProverError::Mismatch {
            what: "SRS",
            detail: format!(
                "the keys were made with an SRS hashing to {} but this one hashes to {}",
                header.srs_sha256, srs.sha256
            ),
        });
    }
    let claimed = match header.srs {
        SrsOrigin::InsecureDev { seed } => Some(seed),
        SrsOrigin::File { .. } => None,
    };
    if !allow_insecure {
        if let Some(seed) = claimed {
            return Err(ProverError::InsecureSrs {
                detail: format!("seed {seed}, as the key header says"),
            });
        }
        if let Some(seed) = srs.known_insecure_seed(None) {
            return Err(ProverError::InsecureSrs {
                detail: format!(
                    "its parameters are the development SRS of seed {seed}, whatever the key header says"
                ),
            });
        }
    }
    Ok(())
}

/// Generates the proving and verifying keys of a compiled model. `srs` must have exactly the
/// circuit's `k` (see [`Srs::downsized`]).
pub fn setup(
    settings: &Settings,
    model: Arc<QuantizedModel>,
    srs: &Srs,
) -> Result<Keys, ProverError> {
    settings.check_model(&model)?;
    let k = settings.circuit.k;
    if srs.k() != k {
        return Err(ProverError::SrsTooSmall {
            have: srs.k(),
            need: k,
        });
    }
    let circuit = ModelCircuit::keygen(model, settings.circuit.shape);
    let vk = keygen_vk(&srs.params, &circuit).map_err(halo2_err("generating the verifying key"))?;
    let pk =
        keygen_pk(&srs.params, vk, &circuit).map_err(halo2_err("generating the proving key"))?;
    Ok(Keys {
        pk,
        header: KeyHeader {
            model_name: settings.model_name.clone(),
            settings_sha256: settings.sha256(),
            model_sha256: settings.model_sha256.clone(),
            k,
            shape: settings.circuit.shape,
            srs: srs.origin.clone(),
            srs_sha256: srs.sha256.clone(),
        },
    })
}

impl Keys {
    /// The proving-key file's bytes.
    pub fn pk_bytes(&self) -> Vec<u8> {
        let mut key = Vec::new();
        self.pk
            .write(&mut key, SerdeFormat::RawBytes)
            .expect("writing to a Vec cannot fail");
        encode_key(PK_MAGIC, &self.header, &key)
    }

    /// The verifying-key file's bytes.
    pub fn vk_bytes(&self) -> Vec<u8> {
        vk_file_bytes(self.pk.get_vk(), &self.header)
    }

    /// Reads a proving-key file and checks it belongs to `settings`.
    pub fn read_pk(path: &Path, settings: &Settings) -> Result<Keys, ProverError> {
        let bytes = crate::artifacts::read_file(path)?;
        let (header, key) = decode_key(PK_MAGIC, &bytes, path)?;
        check_header(&header, settings, "proving key")?;
        let pk = ProvingKey::<G1Affine>::read::<_, ModelCircuit>(
            &mut &key[..],
            SerdeFormat::RawBytes,
            header.shape,
        )
        .map_err(|e| ProverError::BadFile {
            what: "proving key",
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Ok(Keys { pk, header })
    }
}

/// The verifying-key file's bytes.
pub fn vk_file_bytes(vk: &VerifyingKey<G1Affine>, header: &KeyHeader) -> Vec<u8> {
    let mut key = Vec::new();
    vk.write(&mut key, SerdeFormat::RawBytes)
        .expect("writing to a Vec cannot fail");
    encode_key(VK_MAGIC, header, &key)
}

/// Reads a verifying-key file and checks it belongs to `settings`.
pub fn read_vk(
    path: &Path,
    settings: &Settings,
) -> Result<(VerifyingKey<G1Affine>, KeyHeader), ProverError> {
    let bytes = crate::artifacts::read_file(path)?;
    vk_from_bytes(&bytes, path, settings)
}

/// Parses verifying-key file bytes; `path` only names them in errors.
pub fn vk_from_bytes(
    bytes: &[u8],
    path: &Path,
    settings: &Settings,
) -> Result<(VerifyingKey<G1Affine>, KeyHeader), ProverError> {
    let (header, key) = decode_key(VK_MAGIC, bytes, path)?;
    check_header(&header, settings, "verifying key")?;
    let vk = VerifyingKey::<G1Affine>::read::<_, ModelCircuit>(
        &mut &key[..],
        SerdeFormat::RawBytes,
        header.shape,
    )
    .map_err(|e| ProverError::BadFile {
        what: "verifying key",
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok((vk, header))
}

/// Encodes a scalar as 32 big-endian bytes in hex.
pub fn fr_to_hex(f: &Fr) -> String {
    let mut b = f.to_repr();
    b.as_mut().reverse();
    hex::encode(b.as_ref())
}

/// Decodes a scalar from 32 big-endian bytes in hex; refuses values at or above the modulus.
pub fn fr_from_hex(s: &str) -> Option<Fr> {
    let mut bytes = hex::decode(s.trim_start_matches("0x")).ok()?;
    if bytes.len() != 32 {
        return None;
    }
    bytes.reverse();
    let mut repr = <Fr as PrimeField>::Repr::default();
    repr.as_mut().copy_from_slice(&bytes);
    Option::from(Fr::from_repr(repr))
}

/// The prover's commitment parameters for `srs` with the chosen MSM backend, and a warning
/// when the choice could not be honoured (the CPU backend is used then).
pub fn engine(srs: &Srs, msm: MsmChoice) -> Result<(EngineParams, Option<String>), ProverError> {
    let (backend, warning) = crate::msm::backend(msm);
    let params = EngineParams::new(srs.params.clone(), backend)
        .map_err(|e| ProverError::Engine(format!("cannot prepare them: {e}")))?;
    Ok((params, warning))
}

/// Proves one input. `input` holds float values, quantized with the model's settings. Uses
/// the CPU MSM backend; [`prove_with`] takes prepared parameters and any backend.
pub fn prove(
    srs: &Srs,
    keys: &Keys,
    settings: &Settings,
    model: Arc<QuantizedModel>,
    input: &[f64],
) -> Result<ProofFile, ProverError> {
    let (params, _) = engine(srs, MsmChoice::Cpu)?;
    prove_with(srs, &params, keys, settings, model, input)
}

/// [`prove`] with the prover's parameters prepared once ([`engine`] of the same `srs`).
pub fn prove_with(
    srs: &Srs,
    params: &EngineParams,
    keys: &Keys,
    settings: &Settings,
    model: Arc<QuantizedModel>,
    input: &[f64],
) -> Result<ProofFile, ProverError> {
    check_header(&keys.header, settings, "proving key")?;
    // a development SRS may prove (the proof file says so); it must be the keys' own
    check_srs(&keys.header, srs, true)?;
    let same = params.kzg().k() == srs.params.k()
        && params.g().first() == srs.params.get_g().first()
        && params.g().last() == srs.params.get_g().last();
    if !same {
        return Err(ProverError::Engine(
            "they were not prepared from this SRS".into(),
        ));
    }
    settings.check_model(&model)?;
    let xq = model.quantize_input(input)?;
    let circuit = ModelCircuit::with_input(model.clone(), settings.circuit.shape, xq.clone())?;
    let instances = circuit.instances().expect("circuit has a witness");
    let proof = prove_circuit_with(params, &keys.pk, circuit, &instances)?;
    let output = model
        .forward(&xq)
        .into_iter()
        .map(|v| model.dequantize(v))
        .collect();
    Ok(ProofFile {
        format: PROOF_FORMAT.into(),
        version: ARTIFACT_VERSION,
        proof_system: PROOF_SYSTEM.into(),
        transcript: TRANSCRIPT.into(),
        model_name: settings.model_name.clone(),
        settings_sha256: settings.sha256(),
        model_sha256: settings.model_sha256.clone(),
        instances: instances.iter().map(fr_to_hex).collect(),
        input: xq.iter().map(|&u| model.decode_input(u)).collect(),
        output,
        proof: hex::encode(proof),
        insecure_srs: keys.header.srs.is_insecure(),
    })
}

/// Creates proof bytes (SHPLONK, EVM transcript) for a circuit with its witness and the public
/// words it claims. It does not check the witness: an unsatisfied circuit gives a proof that
/// no verifier accepts (the soundness tests rely on that).
pub fn prove_circuit(
    srs: &Srs,
    pk: &ProvingKey<G1Affine>,
    circuit: ModelCircuit,
    instances: &[Fr],
) -> Result<Vec<u8>, ProverError> {
    let mut transcript =
        EvmTranscript::<G1Affine, NativeLoader, Vec<u8>, Vec<u8>>::init(Vec::new());
    create_proof::<KZGCommitmentScheme<Bn256>, ProverSHPLONK<_>, _, _, _, _>(
        &srs.params,
        pk,
        &[circuit],
        &[&[instances]],
        rand::rngs::OsRng,
        &mut transcript,
    )
    .map_err(halo2_err("proving"))?;
    Ok(transcript.finalize())
}

/// [`prove_circuit`] through VeriML's commitment scheme: the same proof bytes, every
/// commitment but the multi-opening's two by `params`' MSM backend.
pub fn prove_circuit_with(
    params: &EngineParams,
    pk: &ProvingKey<G1Affine>,
    circuit: ModelCircuit,
    instances: &[Fr],
) -> Result<Vec<u8>, ProverError> {
    let mut transcript =
        EvmTranscript::<G1Affine, NativeLoader, Vec<u8>, Vec<u8>>::init(Vec::new());
    create_proof::<VeriKzg, EngineShplonk<'_>, _, _, _, _>(
        params,
        pk,
        &[circuit],
        &[&[instances]],
        rand::rngs::OsRng,
        &mut transcript,
    )
    .map_err(halo2_err("proving"))?;
    Ok(transcript.finalize())
}

/// Checks raw proof bytes against a verifying key and public inputs.
pub fn verify_raw(
    params: &ParamsKZG<Bn256>,
    vk: &VerifyingKey<G1Affine>,
    instances: &[Fr],
    proof: &[u8],
) -> Result<(), ProverError> {
    let expected = vk.cs().num_instance_columns();
    if expected != 1 {
        return Err(ProverError::Rejected(format!(
            "verifying key has {expected} instance columns"
        )));
    }
    let mut transcript = EvmTranscript::<G1Affine, NativeLoader, &[u8], Vec<u8>>::init(proof);
    let strategy = verify_proof::<KZGCommitmentScheme<Bn256>, VerifierSHPLONK<_>, _, _, _>(
        params.verifier_params(),
        vk,
        AccumulatorStrategy::new(params.verifier_params()),
        &[&[instances]],
        &mut transcript,
    )
    .map_err(|e| ProverError::Rejected(format!("{e:?}")))?;
    if VerificationStrategy::<_, VerifierSHPLONK<_>>::finalize(strategy) {
        Ok(())
    } else {
        Err(ProverError::Rejected("the KZG pairing check failed".into()))
    }
}

/// The public words of a proof file for `settings`: the model's count, each a canonical scalar.
fn proof_instances(settings: &Settings, proof: &ProofFile) -> Result<Vec<Fr>, ProverError> {
    let n = settings.circuit.num_instances;
    if proof.instances.len() != n {
        return Err(ProverError::Rejected(format!(
            "{} public inputs, the model has {n}",
            proof.instances.len()
        )));
    }
    proof
        .instances
        .iter()
        .enumerate()
        .map(|(i, s)| {
            fr_from_hex(s).ok_or_else(|| {
                ProverError::Rejected(format!("public input {i} is not a canonical BN254 scalar"))
            })
        })
        .collect()
}

/// Checks a proof file's readable `input` and `output` against what its public words encode.
/// Every verification path runs it, native or EVM: the words are what is proven, and a file
/// whose readable values say otherwise is refused.
pub fn check_readable(
    settings: &Settings,
    proof: &ProofFile,
    instances: &[Fr],
) -> Result<(), ProverError> {
    let decoded = settings.decode_public(instances).ok_or_else(|| {
        ProverError::Rejected("the public words are not a packing of in-range values".into())
    })?;
    let first_diff = |what: &str, readable: &[f64], proven: &[f64]| -> Result<(), ProverError> {
        if readable.len() != proven.len() {
            return Err(ProverError::Rejected(format!(
                "the proof file lists {} {what} values, the proof holds {}",
                readable.len(),
                proven.len()
            )));
        }
        match readable.iter().zip(proven).position(|(a, b)| a != b) {
            Some(i) => Err(ProverError::Rejected(format!(
                "the proof file's {what} value {i} is {} but the proof proves {}",
                readable[i], proven[i]
            ))),
            None => Ok(()),
        }
    };
    match decoded.input {
        DecodedInput::Values(input) => first_diff("input", &proof.input, &input)?,
        DecodedInput::Digest(digest) => {
            // a hashed input: the readable input must hash to the proven digest
            let codes = settings
                .input_codes(&proof.input)
                .map_err(|e| ProverError::Rejected(format!("the proof file's input: {e}")))?;
            if input_digest(&settings.public_layout(), &codes) != digest {
                return Err(ProverError::Rejected(
                    "the proof file's input does not hash to the proven input digest".into(),
                ));
            }
        }
    }
    first_diff("output", &proof.output, &decoded.output)
}

/// Checks that a proof file belongs to a verifying key (settings and model hashes).
fn check_proof_header(header: &KeyHeader, proof: &ProofFile) -> Result<(), ProverError> {
    if proof.settings_sha256 != header.settings_sha256 || proof.model_sha256 != header.model_sha256
    {
        return Err(ProverError::Mismatch {
            what: "proof",
            detail: "it was made for another model or other settings".into(),
        });
    }
    Ok(())
}

/// What a proof file is checked for before any cryptography, natively or on the EVM: the key
/// belongs to the settings, the SRS is the key's own (a development one only when allowed), the
/// file belongs to the key, and its public words are the model's count of canonical scalars,
/// which it returns. The readable values are checked against them by [`check_readable`].
pub fn proof_file_words(
    header: &KeyHeader,
    srs: &Srs,
    settings: &Settings,
    proof: &ProofFile,
    allow_insecure_srs: bool,
) -> Result<Vec<Fr>, ProverError> {
    check_header(header, settings, "verifying key")?;
    check_srs(header, srs, allow_insecure_srs)?;
    check_proof_header(header, proof)?;
    proof_instances(settings, proof)
}

/// Verifies a proof file against a verifying key and its SRS (refused if it is a development
/// SRS, unless `allow_insecure_srs`). Returns the proven public inputs.
pub fn verify(
    srs: &Srs,
    vk: &VerifyingKey<G1Affine>,
    header: &KeyHeader,
    settings: &Settings,
    proof: &ProofFile,
    allow_insecure_srs: bool,
) -> Result<Vec<Fr>, ProverError> {
    let instances = proof_file_words(header, srs, settings, proof, allow_insecure_srs)?;
    let bytes = hex::decode(proof.proof.trim_start_matches("0x"))
        .map_err(|e| ProverError::Rejected(format!("proof is not hex: {e}")))?;
    verify_raw(&srs.params, vk, &instances, &bytes)?;
    check_readable(settings, proof, &instances)?;
    Ok(instances)
}

/// Result of a mock run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MockReport {
    pub k: u32,
    pub rows_used: usize,
    pub output: Vec<f64>,
}

/// Runs halo2's `MockProver` on one input; on failure lists every failing constraint.
pub fn mock(
    settings: &Settings,
    model: Arc<QuantizedModel>,
    input: &[f64],
) -> Result<MockReport, ProverError> {
    settings.check_model(&model)?;
    let xq = model.quantize_input(input)?;
    let circuit = ModelCircuit::with_input(model.clone(), settings.circuit.shape, xq)?;
    mock_circuit(settings.circuit.k, &circuit)?;
    let inst = circuit.instances().expect("witness");
    let decoded = settings
        .decode_public(&inst)
        .ok_or_else(|| ProverError::Rejected("the public words do not unpack".into()))?;
    Ok(MockReport {
        k: settings.circuit.k,
        rows_used: settings.circuit.rows_used,
        output: decoded.output,
    })
}

/// Runs `MockProver` on a circuit with its own instances.
pub fn mock_circuit(k: u32, circuit: &ModelCircuit) -> Result<(), ProverError> {
    let instances = circuit.instances().expect("circuit has a witness");
    mock_circuit_with(k, circuit, instances)
}

/// Runs `MockProver` on a circuit with the given public inputs.
pub fn mock_circuit_with(
    k: u32,
    circuit: &ModelCircuit,
    instances: Vec<Fr>,
) -> Result<(), ProverError> {
    let prover = MockProver::run(k, circuit, vec![instances])
        .map_err(halo2_err("running the mock prover"))?;
    prover
        .verify_par()
        .map_err(|fails| ProverError::Unsatisfied(fails.iter().map(|f| f.to_string()).collect()))
}

/// Quantized integers to scalars (helper for tests and tools).
pub fn ints_to_fr(v: &[i64]) -> Vec<Fr> {
    v.iter().map(|&x| fr_from_i128(x as i128)).collect()
}
