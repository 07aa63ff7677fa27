// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.19;

import {Vm} from "forge-std/Vm.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {TinyMlpFixture} from "./fixtures/TinyMlpFixture.sol";

/// Replays the proof fixture written by the Rust side (prover/tests/sol_fixture.rs) through the
/// generated verifier and the registry; every kind of tampering must fail.
contract ModelRegistryTest {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    bytes32 internal constant MODEL = keccak256("tiny_mlp");
    uint64 internal constant GAS_CAP = 2_000_000;

    ModelRegistry internal registry;
    address internal verifier;

    event ResultVerified(
        bytes32 indexed modelId,
        bytes32 indexed inputHash,
        bytes32 indexed outputHash,
        address sender
    );

    function setUp() public {
        bytes memory code = TinyMlpFixture.verifierCreationCode();
        address deployed;
        assembly {
            deployed := create(0, add(code, 0x20), mload(code))
        }
        require(deployed != address(0), "verifier deployment failed");
        verifier = deployed;
        registry = new ModelRegistry(address(this));
        registry.registerModel(
            MODEL,
            verifier,
            TinyMlpFixture.WEIGHTS_HASH,
            TinyMlpFixture.INPUT_WORDS,
            TinyMlpFixture.OUTPUT_WORDS,
            GAS_CAP
        );
    }

    function hashes(uint256[] memory v)
        internal
        pure
        returns (bytes32 inputHash, bytes32 outputHash)
    {
        uint256 n = TinyMlpFixture.INPUT_WORDS;
        uint256[] memory a = new uint256[](n);
        uint256[] memory b = new uint256[](v.length - n);
        for (uint256 i = 0; i < v.length; ++i) {
            if (i < n) a[i] = v[i];
            else b[i - n] = v[i];
        }
        inputHash = keccak256(abi.encodePacked(a));
        outputHash = keccak256(abi.encodePacked(b));
    }

    function test_validProofVerifiesAndIsRecorded() public {
        uint256[] memory inputs = TinyMlpFixture.publicInputs();
        (bytes32 inputHash, bytes32 outputHash) = hashes(inputs);
        require(!registry.isVerified(MODEL, inputHash, outputHash), "not yet verified");
        vm.expectEmit(true, true, true, true);
        emit ResultVerified(MODEL, inputHash, outputHash, address(this));
        bytes32 id = registry.verify(MODEL, inputs, TinyMlpFixture.proof());
        require(id == keccak256(abi.encode(MODEL, inputHash, outputHash)), "result id");
        require(registry.isVerified(MODEL, inputHash, outputHash), "recorded");
    }

    function test_verifierAloneAcceptsWithEmptyReturn() public {
        (bool ok, bytes memory ret) =
            verifier.call(abi.encodePacked(TinyMlpFixture.publicInputs(), TinyMlpFixture.proof()));
        require(ok && ret.length == 0, "valid proof must pass with empty return data");
    }

    function test_flippedProofByteIsRejected() public {
        bytes memory proof = TinyMlpFixture.proof();
        proof[100] = bytes1(uint8(proof[100]) ^ 1);
        uint256[] memory inputs = TinyMlpFixture.publicInputs();
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ProofRejected.selector, MODEL));
        registry.verify(MODEL, inputs, proof);
    }

    function test_changedPublicOutputIsRejected() public {
        uint256[] memory inputs = TinyMlpFixture.publicInputs();
        inputs[inputs.length - 1] += 1;
        bytes memory proof = TinyMlpFixture.proof();
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ProofRejected.selector, MODEL));
        registry.verify(MODEL, inputs, proof);
    }

    function test_forgedAboveRangeInputIsRejected() public {
        uint256[] memory inputs = TinyMlpFixture.forgedAboveRangeInputs();
        bytes memory proof = TinyMlpFixture.forgedAboveRangeProof();
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ProofRejected.selector, MODEL));
        registry.verify(MODEL, inputs, proof);
        (bool ok,) = verifier.call(abi.encodePacked(inputs, proof));
        require(!ok, "the verifier alone must reject it too");
    }

    function test_inputPlusModulusIsRejectedBeforeTheVerifier() public {
        uint256[] memory inputs = TinyMlpFixture.publicInputs();
        inputs[0] += registry.SNARK_SCALAR_FIELD();
        bytes memory proof = TinyMlpFixture.proof();
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.InputOutOfField.selector, 0));
        registry.verify(MODEL, inputs, proof);
    }

    function test_offCurvePointIsRejected() public {
        bytes memory proof = TinyMlpFixture.proof();
        for (uint256 i = 0; i < 64; ++i) {
            proof[i] = 0;
        }
        proof[31] = 0x01;
        proof[63] = 0x03; // (1, 3) is not on y^2 = x^3 + 3
        uint256[] memory inputs = TinyMlpFixture.publicInputs();
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.ProofRejected.selector, MODEL));
        registry.verify(MODEL, inputs, proof);
    }

    function test_unregisteredModelIsRejected() public {
        uint256[] memory inputs = TinyMlpFixture.publicInputs();
        bytes memory proof = TinyMlpFixture.proof();
        bytes32 other = keccak256("other");
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, other));
        registry.verify(other, inputs, proof);
    }

    function test_revokedModelIsRejected() public {
        registry.revokeModel(MODEL);
        uint256[] memory inputs = TinyMlpFixture.publicInputs();
        bytes memory proof = TinyMlpFixture.proof();
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.UnknownModel.selector, MODEL));
        registry.verify(MODEL, inputs, proof);
    }

    function test_verifierWithoutCodeIsRejected() public {
        address empty = address(0xBEEF);
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.NoCode.selector, empty));
        registry.registerModel(keccak256("x"), empty, bytes32(0), 1, 1, GAS_CAP);
        // code that disappears after registration
        vm.etch(verifier, "");
        uint256[] memory inputs = TinyMlpFixture.publicInputs();
        bytes memory proof = TinyMlpFixture.proof();
        vm.expectRevert(abi.encodeWithSelector(ModelRegistry.NoCode.selector, verifier));
        registry.verify(MODEL, inputs, proof);
    }

    function test_wrongNumberOfPublicInputsIsRejected() public {
        uint256[] memory full = TinyMlpFixture.publicInputs();
        uint256[] memory inputs = new uint256[](full.length - 1);
        for (uint256 i = 0; i < inputs.length; ++i) {
            inputs[i] = full[i];
        }
        bytes memory proof = TinyMlpFixture.proof();
        vm.expectRevert(
            abi.encodeWithSelector(
                ModelRegistry.WrongInputCount.selector, full.length - 1, full.length
            )
        );
        registry.verify(MODEL, inputs, proof);
    }

    function test_onlyOwnerRegistersAndRevokes() public {
        vm.prank(address(0xA11CE));
        vm.expectRevert(ModelRegistry.NotOwner.selector);
        registry.registerModel(keccak256("y"), verifier, bytes32(0), 1, 1, GAS_CAP);
        vm.prank(address(0xA11CE));
        vm.expectRevert(ModelRegistry.NotOwner.selector);
        registry.revokeModel(MODEL);
    }

    function test_gasCapBounds() public {
        vm.expectRevert(ModelRegistry.BadGasCap.selector);
        registry.registerModel(keccak256("z"), verifier, bytes32(0), 1, 1, 10);
    }

    function test_wordCountsMustFitTheirSlot() public {
        vm.expectRevert(ModelRegistry.TooManyWords.selector);
        registry.registerModel(keccak256("z"), verifier, bytes32(0), 70_000, 1, GAS_CAP);
        vm.expectRevert(ModelRegistry.TooManyWords.selector);
        registry.registerModel(keccak256("z"), verifier, bytes32(0), 1, 70_000, GAS_CAP);
    }

    function test_ownershipTransferIsTwoStep() public {
        address next = address(0xB0B);
        registry.transferOwnership(next);
        require(registry.owner() == address(this), "still the owner until accepted");
        vm.prank(address(0xC0C));
        vm.expectRevert(ModelRegistry.NotPendingOwner.selector);
        registry.acceptOwnership();
        vm.prank(next);
        registry.acceptOwnership();
        require(registry.owner() == next, "new owner");
    }
}
