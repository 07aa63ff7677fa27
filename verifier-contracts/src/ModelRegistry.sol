// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.19;

/// @title VeriML model registry and verifier router
/// @notice Maps a model id to the generated halo2 verifier of that model (and the SHA-256 of its
///         compiled model, kept under the name `weightsHash`: weights, input range, scales and
///         shapes), checks proofs through it, and records which results were verified.
/// @dev Public inputs are packed words (BN254 scalars): first the words holding the quantized
///      model input, then those holding its output. The generated verifiers take
///      `publicInputs || proof` as calldata, revert on an invalid proof and return nothing on a
///      valid one.
contract ModelRegistry {
    /// @notice The BN254 scalar field modulus: every public input must be below it.
    uint256 public constant SNARK_SCALAR_FIELD =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;

    /// @dev A VeriML proof's public inputs are packed words: first `inputWords` words holding the
    /// quantized model input, then `outputWords` words holding its output (see `veriml verify`
    /// or `Settings::decode_public` to read the values back). Everything `verify` reads fits in
    /// the first storage slot (one cold read).
    struct Model {
        address verifier;
        uint32 gasCap;
        uint16 inputWords;
        uint16 outputWords;
        bool active;
        bytes32 weightsHash;
    }

    address public owner;
    address public pendingOwner;
    mapping(bytes32 => Model) public models;
    /// @notice resultId => verified; resultId = keccak256(abi.encode(modelId, inputHash, outputHash)).
    mapping(bytes32 => bool) public verifiedResults;

    event ModelRegistered(
        bytes32 indexed modelId,
        address indexed verifier,
        bytes32 weightsHash,
        uint32 inputWords,
        uint32 outputWords,
        uint64 gasCap
    );
    event ModelRevoked(bytes32 indexed modelId);
    event ResultVerified(
        bytes32 indexed modelId,
        bytes32 indexed inputHash,
        bytes32 indexed outputHash,
        address sender
    );
    event OwnershipTransferStarted(address indexed from, address indexed to);
    event OwnershipTransferred(address indexed from, address indexed to);

    error NotOwner();
    error NotPendingOwner();
    error UnknownModel(bytes32 modelId);
    error NoCode(address verifier);
    error BadGasCap();
    error TooManyWords();
    error WrongInputCount(uint256 got, uint256 expected);
    error InputOutOfField(uint256 index);
    error ProofRejected(bytes32 modelId);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(address initialOwner) {
        owner = initialOwner;
        emit OwnershipTransferred(address(0), initialOwner);
    }

    /// @notice Registers (or replaces) a model's verifier.
    function registerModel(
        bytes32 modelId,
        address verifier,
        bytes32 weightsHash,
        uint32 inputWords,
        uint32 outputWords,
        uint64 gasCap
    ) external onlyOwner {
        if (verifier.code.length == 0) revert NoCode(verifier);
        if (gasCap < 100_000 || gasCap > 15_000_000) revert BadGasCap();
        if (inputWords > type(uint16).max || outputWords > type(uint16).max) revert TooManyWords();
        models[modelId] = Model(
            verifier, uint32(gasCap), uint16(inputWords), uint16(outputWords), true, weightsHash
        );
        emit ModelRegistered(modelId, verifier, weightsHash, inputWords, outputWords, gasCap);
    }

    /// @notice Stops accepting proofs for a model; results verified before stay recorded.
    function revokeModel(bytes32 modelId) external onlyOwner {
        if (!models[modelId].active) revert UnknownModel(modelId);
        models[modelId].active = false;
        emit ModelRevoked(modelId);
    }

    function transferOwnership(address to) external onlyOwner {
        pendingOwner = to;
        emit OwnershipTransferStarted(owner, to);
    }

    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner();
        emit OwnershipTransferred(owner, msg.sender);
        owner = msg.sender;
        pendingOwner = address(0);
    }

    /// @notice Checks a proof with the model's pinned verifier and records the result.
    /// @return resultId keccak256(abi.encode(modelId, inputHash, outputHash))
    function verify(bytes32 modelId, uint256[] calldata publicInputs, bytes calldata proof)
        external
        returns (bytes32 resultId)
    {
        Model storage m = models[modelId];
        if (!m.active) revert UnknownModel(modelId);
        uint256 inputWords = m.inputWords;
        uint256 expected = inputWords + uint256(m.outputWords);
        if (publicInputs.length != expected) revert WrongInputCount(publicInputs.length, expected);
        for (uint256 i = 0; i < publicInputs.length; ++i) {
            if (publicInputs[i] >= SNARK_SCALAR_FIELD) revert InputOutOfField(i);
        }
        // checked again here: the code could be gone since registration
        if (m.verifier.code.length == 0) revert NoCode(m.verifier);
        (bool ok, bytes memory ret) =
            m.verifier.call{gas: m.gasCap}(abi.encodePacked(publicInputs, proof));
        if (!ok || ret.length != 0) revert ProofRejected(modelId);

        bytes32 inputHash = keccak256(abi.encodePacked(publicInputs[:inputWords]));
        bytes32 outputHash = keccak256(abi.encodePacked(publicInputs[inputWords:]));
        resultId = keccak256(abi.encode(modelId, inputHash, outputHash));
        verifiedResults[resultId] = true;
        emit ResultVerified(modelId, inputHash, outputHash, msg.sender);
    }

    /// @notice Whether this model was proven to give this output on this input.
    function isVerified(bytes32 modelId, bytes32 inputHash, bytes32 outputHash)
        external
        view
        returns (bool)
    {
        return verifiedResults[keccak256(abi.encode(modelId, inputHash, outputHash))];
    }
}
