// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.19;

/// @title VeriML TEE registry: attested enclave keys and signed inference receipts
/// @notice A TEE runner's signing key (secp256k1, so `ecrecover` checks it) is registered once a
///         quorum of configured attestation verifiers (operators that check the SEV-SNP report
///         off-chain) has signed the registration. Receipts signed by a registered, unexpired,
///         unrevoked key are then verified on-chain, each nonce once.
contract TeeRegistry {
    struct Enclave {
        bytes32 measurementHash;
        uint64 tcb;
        uint64 expiry;
        bool revoked;
    }

    /// @notice What a runner signs for every result.
    struct Receipt {
        uint256 chainId;
        bytes32 modelId;
        bytes32 requestHash;
        bytes32 responseHash;
        uint64 timestamp;
        bytes32 nonce;
    }

    bytes32 public constant REGISTRATION_TYPEHASH = keccak256(
        "VeriMLEnclaveRegistration(uint256 chainId,address registry,address key,bytes32 measurementHash,uint64 tcb,uint64 expiry)"
    );
    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "VeriMLReceipt(uint256 chainId,bytes32 modelId,bytes32 requestHash,bytes32 responseHash,uint64 timestamp,bytes32 nonce)"
    );
    /// secp256k1 order / 2: larger `s` values are the malleable twin of a valid signature.
    uint256 internal constant HALF_ORDER =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    address public owner;
    uint256 public quorum;
    /// @notice How far a receipt's timestamp may lie in the past or future (seconds).
    uint64 public maxAge;
    uint64 public maxSkew;
    mapping(address => bool) public isAttestationVerifier;
    mapping(address => Enclave) public enclaves;
    mapping(bytes32 => bool) public revokedMeasurements;
    /// @notice key => nonce => used
    mapping(address => mapping(bytes32 => bool)) public usedNonces;

    event AttestationVerifierSet(address indexed verifier, bool allowed);
    event QuorumSet(uint256 quorum);
    event EnclaveRegistered(
        address indexed key, bytes32 indexed measurementHash, uint64 tcb, uint64 expiry
    );
    event EnclaveRevoked(address indexed key);
    event MeasurementRevoked(bytes32 indexed measurementHash);
    event ReceiptVerified(
        address indexed key, bytes32 indexed modelId, bytes32 requestHash, bytes32 responseHash
    );

    error NotOwner();
    error BadQuorum();
    error QuorumNotReached(uint256 valid, uint256 needed);
    error AlreadyExpired();
    error BadSignature();
    error UnknownKey(address key);
    error KeyRevoked(address key);
    error KeyExpired(address key, uint64 expiry);
    error MeasurementIsRevoked(bytes32 measurementHash);
    error WrongChain(uint256 chainId);
    error StaleReceipt(uint64 timestamp);
    error FutureReceipt(uint64 timestamp);
    error NonceUsed(bytes32 nonce);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(address initialOwner, uint64 maxAge_, uint64 maxSkew_) {
        owner = initialOwner;
        maxAge = maxAge_;
        maxSkew = maxSkew_;
    }

    function setAttestationVerifier(address verifier, bool allowed) external onlyOwner {
        isAttestationVerifier[verifier] = allowed;
        emit AttestationVerifierSet(verifier, allowed);
    }

    function setQuorum(uint256 quorum_) external onlyOwner {
        if (quorum_ == 0) revert BadQuorum();
        quorum = quorum_;
        emit QuorumSet(quorum_);
    }

    function registrationDigest(address key, bytes32 measurementHash, uint64 tcb, uint64 expiry)
        public
        view
        returns (bytes32)
    {
        return keccak256(
            abi.encode(
                REGISTRATION_TYPEHASH,
                block.chainid,
                address(this),
                key,
                measurementHash,
                tcb,
                expiry
            )
        );
    }

    function receiptDigest(Receipt calldata r) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                RECEIPT_TYPEHASH,
                r.chainId,
                r.modelId,
                r.requestHash,
                r.responseHash,
                r.timestamp,
                r.nonce
            )
        );
    }

    function recover(bytes32 digest, bytes calldata sig) internal pure returns (address) {
        if (sig.length != 65) revert BadSignature();
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (uint256(s) > HALF_ORDER || (v != 27 && v != 28)) revert BadSignature();
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature();
        return signer;
    }

    /// @notice Registers an enclave key with the signatures of at least `quorum` distinct
    ///         attestation verifiers over `registrationDigest(...)`.
    function registerEnclave(
        address key,
        bytes32 measurementHash,
        uint64 tcb,
        uint64 expiry,
        bytes[] calldata signatures
    ) external {
        if (quorum == 0) revert BadQuorum();
        if (expiry <= block.timestamp) revert AlreadyExpired();
        if (revokedMeasurements[measurementHash]) revert MeasurementIsRevoked(measurementHash);
        bytes32 digest = registrationDigest(key, measurementHash, tcb, expiry);
        address[] memory seen = new address[](signatures.length);
        uint256 valid = 0;
        for (uint256 i = 0; i < signatures.length; ++i) {
            address signer = recover(digest, signatures[i]);
            if (!isAttestationVerifier[signer]) continue;
            bool duplicate = false;
            for (uint256 j = 0; j < valid; ++j) {
                if (seen[j] == signer) duplicate = true;
            }
            if (duplicate) continue;
            seen[valid++] = signer;
        }
        if (valid < quorum) revert QuorumNotReached(valid, quorum);
        enclaves[key] = Enclave(measurementHash, tcb, expiry, false);
        emit EnclaveRegistered(key, measurementHash, tcb, expiry);
    }

    function revokeEnclave(address key) external onlyOwner {
        if (enclaves[key].expiry == 0) revert UnknownKey(key);
        enclaves[key].revoked = true;
        emit EnclaveRevoked(key);
    }

    function revokeMeasurement(bytes32 measurementHash) external onlyOwner {
        revokedMeasurements[measurementHash] = true;
        emit MeasurementRevoked(measurementHash);
    }

    /// @notice Checks a receipt and its signature, and consumes its nonce.
    /// @return key the enclave key that signed it
    function verifyReceipt(Receipt calldata receipt, bytes calldata signature)
        external
        returns (address key)
    {
        if (receipt.chainId != block.chainid) revert WrongChain(receipt.chainId);
        key = recover(receiptDigest(receipt), signature);
        Enclave memory e = enclaves[key];
        if (e.expiry == 0) revert UnknownKey(key);
        if (e.revoked) revert KeyRevoked(key);
        if (revokedMeasurements[e.measurementHash]) revert MeasurementIsRevoked(e.measurementHash);
        if (block.timestamp >= e.expiry) revert KeyExpired(key, e.expiry);
        if (receipt.timestamp > block.timestamp + maxSkew) revert FutureReceipt(receipt.timestamp);
        if (receipt.timestamp + maxAge < block.timestamp) revert StaleReceipt(receipt.timestamp);
        if (usedNonces[key][receipt.nonce]) revert NonceUsed(receipt.nonce);
        usedNonces[key][receipt.nonce] = true;
        emit ReceiptVerified(key, receipt.modelId, receipt.requestHash, receipt.responseHash);
    }
}
