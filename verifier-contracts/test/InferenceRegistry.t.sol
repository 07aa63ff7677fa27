// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.19;

import {Vm} from "forge-std/Vm.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {TeeRegistry} from "../src/TeeRegistry.sol";
import {InferenceRegistry, ClassificationConsumer} from "../src/InferenceRegistry.sol";
import {TinyMlpFixture} from "./fixtures/TinyMlpFixture.sol";

/// One open model (the tiny_mlp proof fixture through its generated verifier) and one closed
/// model (a receipt signed by a registered enclave key) settle into one registry, which a
/// consumer reads; tampered evidence of each kind, wrong routes and replays are refused.
contract InferenceRegistryTest {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    bytes32 internal constant ZK_MODEL = keccak256("tiny_mlp");
    bytes32 internal constant OPEN = keccak256("tiny");
    bytes32 internal constant CLOSED = keccak256("chat");
    bytes32 internal constant SIGNED_MODEL = keccak256("chat-large");
    uint256 internal constant OP = 0xA1;
    uint256 internal constant ENCLAVE = 0xE1;
    bytes32 internal constant MEASUREMENT = keccak256("launch measurement");
    uint64 internal constant T0 = 1_800_000_000;

    ModelRegistry internal models;
    TeeRegistry internal tee;
    InferenceRegistry internal reg;
    ClassificationConsumer internal consumer;

    function setUp() public {
        vm.warp(T0);
        bytes memory code = TinyMlpFixture.verifierCreationCode();
        address verifier;
        assembly {
            verifier := create(0, add(code, 0x20), mload(code))
        }
        require(verifier != address(0), "verifier deployment failed");
        models = new ModelRegistry(address(this));
        models.registerModel(
            ZK_MODEL,
            verifier,
            TinyMlpFixture.WEIGHTS_HASH,
            TinyMlpFixture.INPUT_WORDS,
            TinyMlpFixture.OUTPUT_WORDS,
            2_000_000
        );
        tee = new TeeRegistry(address(this), 600, 30);
        tee.setAttestationVerifier(vm.addr(OP), true);
        tee.setQuorum(1);
        bytes32 d = tee.registrationDigest(vm.addr(ENCLAVE), MEASUREMENT, 7, T0 + 1 days);
        bytes[] memory approvals = new bytes[](1);
        approvals[0] = sig(OP, d);
        tee.registerEnclave(vm.addr(ENCLAVE), MEASUREMENT, 7, T0 + 1 days, approvals);
        reg = new InferenceRegistry(models, tee, address(this));
        reg.setRoute(OPEN, InferenceRegistry.Kind.Zk, ZK_MODEL);
        reg.setRoute(CLOSED, InferenceRegistry.Kind.Tee, SIGNED_MODEL);
        consumer = new ClassificationConsumer(reg, OPEN);
    }

    function sig(uint256 pk, bytes32 digest) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    function receipt(bytes32 model) internal view returns (TeeRegistry.Receipt memory) {
        return TeeRegistry.Receipt({
            chainId: block.chainid,
            modelId: model,
            requestHash: keccak256("request"),
            responseHash: keccak256("response"),
            timestamp: uint64(block.timestamp),
            nonce: bytes32(uint256(1))
        });
    }

    function digestOf(TeeRegistry.Receipt calldata r) external view returns (bytes32) {
        return tee.receiptDigest(r);
    }

    function split(uint256[] memory v)
        internal
        pure
        returns (bytes32 inputHash, uint256[] memory outputWords)
    {
        uint256 n = TinyMlpFixture.INPUT_WORDS;
        uint256[] memory a = new uint256[](n);
        outputWords = new uint256[](v.length - n);
        for (uint256 i = 0; i < v.length; ++i) {
            if (i < n) a[i] = v[i];
            else outputWords[i - n] = v[i];
        }
        inputHash = keccak256(abi.encodePacked(a));
    }

    function test_aProofSettlesOnceAndTheConsumerActsOnIt() public {
        uint256[] memory words = TinyMlpFixture.publicInputs();
        (bytes32 inputHash, uint256[] memory out) = split(words);
        bytes32 outputHash = keccak256(abi.encodePacked(out));
        require(!reg.isSettled(OPEN, inputHash, outputHash), "not yet");
        // the consumer refuses a result that is not settled
        vm.expectRevert(
            abi.encodeWithSelector(
                ClassificationConsumer.NotSettled.selector, inputHash, outputHash
            )
        );
        consumer.accept(inputHash, out);
        bytes32 id = reg.submitProof(OPEN, words, TinyMlpFixture.proof());
        require(id == keccak256(abi.encode(OPEN, inputHash, outputHash)), "result id");
        require(reg.isSettled(OPEN, inputHash, outputHash), "settled");
        (bytes32 m,,, InferenceRegistry.Kind kind, uint64 blockNumber) = reg.results(id);
        require(m == OPEN && kind == InferenceRegistry.Kind.Zk && blockNumber == block.number, "r");
        vm.expectRevert(abi.encodeWithSelector(InferenceRegistry.AlreadySettled.selector, id));
        reg.submitProof(OPEN, words, TinyMlpFixture.proof());
        // another output claimed for the same input is refused; the settled one is accepted
        uint256[] memory other = new uint256[](out.length);
        other[0] = out[0] ^ 1;
        vm.expectRevert(
            abi.encodeWithSelector(
                ClassificationConsumer.NotSettled.selector,
                inputHash,
                keccak256(abi.encodePacked(other))
            )
        );
        consumer.accept(inputHash, other);
        consumer.accept(inputHash, out);
        require(consumer.acceptedOutput(inputHash) == outputHash, "accepted");
    }

    function test_aTamperedProofIsRefused() public {
        bytes memory proof = TinyMlpFixture.proof();
        proof[100] = bytes1(uint8(proof[100]) ^ 1);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ProofRejected.selector, ZK_MODEL));
        reg.submitProof(OPEN, TinyMlpFixture.publicInputs(), proof);
        uint256[] memory words = TinyMlpFixture.publicInputs();
        words[words.length - 1] ^= 1;
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ProofRejected.selector, ZK_MODEL));
        reg.submitProof(OPEN, words, TinyMlpFixture.proof());
    }

    function test_aReceiptSettlesOnce() public {
        TeeRegistry.Receipt memory r = receipt(SIGNED_MODEL);
        bytes memory s = sig(ENCLAVE, this.digestOf(r));
        bytes32 id = reg.submitReceipt(CLOSED, r, s);
        require(id == keccak256(abi.encode(CLOSED, r.requestHash, r.responseHash)), "id");
        require(reg.isSettled(CLOSED, r.requestHash, r.responseHash), "settled");
        // the same receipt again: its nonce is spent
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.NonceUsed.selector, r.nonce));
        reg.submitReceipt(CLOSED, r, s);
    }

    function test_aTamperedReceiptIsRefused() public {
        TeeRegistry.Receipt memory r = receipt(SIGNED_MODEL);
        bytes memory s = sig(ENCLAVE, this.digestOf(r));
        r.responseHash = keccak256("another response");
        // the signature now recovers to some other, unregistered key
        bytes4 unknown = TeeRegistry.UnknownKey.selector;
        (bool ok, bytes memory ret) =
            address(reg).call(abi.encodeCall(InferenceRegistry.submitReceipt, (CLOSED, r, s)));
        require(!ok && bytes4(ret) == unknown, "tampered receipt refused");
    }

    function test_wrongRoutesAreRefused() public {
        TeeRegistry.Receipt memory r = receipt(keccak256("another model"));
        bytes memory s = sig(ENCLAVE, this.digestOf(r));
        vm.expectRevert(
            abi.encodeWithSelector(
                InferenceRegistry.WrongTeeModel.selector, r.modelId, SIGNED_MODEL
            )
        );
        reg.submitReceipt(CLOSED, r, s);
        vm.expectRevert(
            abi.encodeWithSelector(
                InferenceRegistry.WrongKind.selector, OPEN, InferenceRegistry.Kind.Zk
            )
        );
        reg.submitReceipt(OPEN, r, s);
        vm.expectRevert(
            abi.encodeWithSelector(
                InferenceRegistry.WrongKind.selector, CLOSED, InferenceRegistry.Kind.Tee
            )
        );
        reg.submitProof(CLOSED, TinyMlpFixture.publicInputs(), TinyMlpFixture.proof());
        bytes32 unrouted = keccak256("unrouted");
        vm.expectRevert(
            abi.encodeWithSelector(
                InferenceRegistry.WrongKind.selector, unrouted, InferenceRegistry.Kind.None
            )
        );
        reg.submitProof(unrouted, TinyMlpFixture.publicInputs(), TinyMlpFixture.proof());
    }

    function test_onlyTheOwnerRoutes() public {
        vm.prank(vm.addr(0xB1));
        vm.expectRevert(InferenceRegistry.NotOwner.selector);
        reg.setRoute(OPEN, InferenceRegistry.Kind.None, bytes32(0));
        vm.expectRevert(InferenceRegistry.BadRoute.selector);
        reg.setRoute(OPEN, InferenceRegistry.Kind.Zk, bytes32(0));
        reg.setRoute(OPEN, InferenceRegistry.Kind.None, bytes32(0));
        (InferenceRegistry.Kind kind,) = reg.routes(OPEN);
        require(kind == InferenceRegistry.Kind.None, "removed");
    }
}
