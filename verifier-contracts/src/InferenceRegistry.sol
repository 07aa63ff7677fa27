// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.19;

import {ModelRegistry} from "./ModelRegistry.sol";
import {TeeRegistry} from "./TeeRegistry.sol";

/// @title VeriML inference registry: one place where verified results of open and closed models
///        are recorded and read
/// @notice Each model id (`keccak256` of the catalogue id) is routed to its evidence: a proof
///         checked by `ModelRegistry` (open models) or a TEE runner's receipt checked by
///         `TeeRegistry` (closed models). A result is recorded under
///         `keccak256(abi.encode(modelId, inputHash, outputHash))` with the hashes the evidence
///         commits to: `keccak256` of the packed input and output words (proofs), or the
///         receipt's request and response hashes (TEE). Consumers read `isSettled`/`results`.
contract InferenceRegistry {
    enum Kind {
        None,
        Zk,
        Tee
    }

    /// @notice Where a model id's evidence is checked: the `ModelRegistry` id of an open model,
    ///         or the model id a closed model's runner signs (`keccak256` of the provider's model
    ///         name).
    struct Route {
        Kind kind;
        bytes32 target;
    }

    struct Result {
        bytes32 modelId;
        bytes32 inputHash;
        bytes32 outputHash;
        Kind kind;
        uint64 blockNumber;
    }

    ModelRegistry public immutable models;
    TeeRegistry public immutable tee;
    address public owner;
    mapping(bytes32 => Route) public routes;
    /// @notice resultId => the settled result (`blockNumber` 0: none).
    mapping(bytes32 => Result) public results;

    event RouteSet(bytes32 indexed modelId, Kind kind, bytes32 target);
    event InferenceSettled(
        bytes32 indexed resultId,
        bytes32 indexed modelId,
        bytes32 inputHash,
        bytes32 outputHash,
        Kind kind
    );

    error NotOwner();
    error BadRoute();
    error WrongKind(bytes32 modelId, Kind routed);
    error WrongTeeModel(bytes32 signed, bytes32 routed);
    error AlreadySettled(bytes32 resultId);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(ModelRegistry models_, TeeRegistry tee_, address owner_) {
        models = models_;
        tee = tee_;
        owner = owner_;
    }

    /// @notice Routes a model id to its evidence (`Kind.None` removes the route).
    function setRoute(bytes32 modelId, Kind kind, bytes32 target) external onlyOwner {
        if ((kind == Kind.None) != (target == bytes32(0))) revert BadRoute();
        routes[modelId] = Route(kind, target);
        emit RouteSet(modelId, kind, target);
    }

    /// @notice Settles an open model's result: the proof must verify in `ModelRegistry`.
    function submitProof(bytes32 modelId, uint256[] calldata publicInputs, bytes calldata proof)
        external
        returns (bytes32 resultId)
    {
        Route memory r = routes[modelId];
        if (r.kind != Kind.Zk) revert WrongKind(modelId, r.kind);
        models.verify(r.target, publicInputs, proof);
        (,, uint16 inputWords,,,) = models.models(r.target);
        bytes32 inputHash = keccak256(abi.encodePacked(publicInputs[:inputWords]));
        bytes32 outputHash = keccak256(abi.encodePacked(publicInputs[inputWords:]));
        return record(modelId, inputHash, outputHash, Kind.Zk);
    }

    /// @notice Settles a closed model's result: the receipt must verify in `TeeRegistry` (a
    ///         registered, attested key; each nonce once) and be signed for the routed model.
    function submitReceipt(
        bytes32 modelId,
        TeeRegistry.Receipt calldata receipt,
        bytes calldata signature
    ) external returns (bytes32 resultId) {
        Route memory r = routes[modelId];
        if (r.kind != Kind.Tee) revert WrongKind(modelId, r.kind);
        if (receipt.modelId != r.target) revert WrongTeeModel(receipt.modelId, r.target);
        tee.verifyReceipt(receipt, signature);
        return record(modelId, receipt.requestHash, receipt.responseHash, Kind.Tee);
    }

    function record(bytes32 modelId, bytes32 inputHash, bytes32 outputHash, Kind kind)
        internal
        returns (bytes32 resultId)
    {
        resultId = keccak256(abi.encode(modelId, inputHash, outputHash));
        if (results[resultId].blockNumber != 0) revert AlreadySettled(resultId);
        results[resultId] = Result(modelId, inputHash, outputHash, kind, uint64(block.number));
        emit InferenceSettled(resultId, modelId, inputHash, outputHash, kind);
    }

    /// @notice Whether this model's result on this input was settled.
    function isSettled(bytes32 modelId, bytes32 inputHash, bytes32 outputHash)
        external
        view
        returns (bool)
    {
        return results[keccak256(abi.encode(modelId, inputHash, outputHash))].blockNumber != 0;
    }
}

/// @title A sample consumer: acts on a verified classification
/// @notice Pays out a bounty for an input once the model's output for it has been settled, to
///         whoever presents the output words: the contract checks them against the settled
///         output hash, so nobody can claim a result the model did not give.
contract ClassificationConsumer {
    InferenceRegistry public immutable registry;
    bytes32 public immutable modelId;
    /// @notice inputHash => the output words accepted for it.
    mapping(bytes32 => bytes32) public acceptedOutput;

    event ClassificationAccepted(bytes32 indexed inputHash, uint256[] outputWords);

    error NotSettled(bytes32 inputHash, bytes32 outputHash);
    error AlreadyAccepted(bytes32 inputHash);

    constructor(InferenceRegistry registry_, bytes32 modelId_) {
        registry = registry_;
        modelId = modelId_;
    }

    /// @notice Accepts the model's output words for an input once the registry has settled them.
    function accept(bytes32 inputHash, uint256[] calldata outputWords) external {
        if (acceptedOutput[inputHash] != bytes32(0)) revert AlreadyAccepted(inputHash);
        bytes32 outputHash = keccak256(abi.encodePacked(outputWords));
        if (!registry.isSettled(modelId, inputHash, outputHash)) {
            revert NotSettled(inputHash, outputHash);
        }
        acceptedOutput[inputHash] = outputHash;
        emit ClassificationAccepted(inputHash, outputWords);
    }
}
