// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.19;

import {
    DeployModelRegistry,
    DeployVerifier,
    DeployTeeRegistry,
    DeployInferenceRegistry
} from "../script/Deploy.s.sol";
import {InferenceRegistry} from "../src/InferenceRegistry.sol";
import {ModelRegistry} from "../src/ModelRegistry.sol";
import {TeeRegistry} from "../src/TeeRegistry.sol";
import {TinyMlpFixture} from "./fixtures/TinyMlpFixture.sol";

interface EnvVm {
    function setEnv(string calldata name, string calldata value) external;
    function toString(address) external pure returns (string memory);
    function toString(bytes calldata) external pure returns (string memory);
    function toString(bytes32) external pure returns (string memory);
    function toString(uint256) external pure returns (string memory);
    function chainId(uint256) external;
    function expectRevert(bytes calldata) external;
}

/// The deployment scripts, run against the test EVM: the same code paths a broadcast takes.
contract DeployScriptsTest {
    EnvVm internal constant vm = EnvVm(address(uint160(uint256(keccak256("hevm cheat code")))));
    /// forge's default broadcaster in tests: the key a real `--broadcast` would use. Every test
    /// sets the same owner, since environment variables are shared by tests running in parallel.
    address internal constant BROADCASTER = 0x1804c8AB1F12E6bbf3894d4083f33e07309d1f38;

    function test_deployRegistryThenVerifierOnBaseSepolia() public {
        vm.chainId(84532);
        // the owner key runs both scripts
        vm.setEnv("VERIML_OWNER", vm.toString(BROADCASTER));
        ModelRegistry registry = new DeployModelRegistry().run();
        require(registry.owner() == BROADCASTER, "owner");
        DeployVerifier dv = new DeployVerifier();
        vm.setEnv("VERIML_REGISTRY", vm.toString(address(registry)));
        vm.setEnv("VERIML_VERIFIER_BYTECODE", vm.toString(TinyMlpFixture.verifierCreationCode()));
        vm.setEnv("VERIML_MODEL_ID", vm.toString(keccak256("tiny_mlp")));
        vm.setEnv("VERIML_WEIGHTS_HASH", vm.toString(TinyMlpFixture.WEIGHTS_HASH));
        vm.setEnv("VERIML_INPUT_WORDS", vm.toString(uint256(TinyMlpFixture.INPUT_WORDS)));
        vm.setEnv("VERIML_OUTPUT_WORDS", vm.toString(uint256(TinyMlpFixture.OUTPUT_WORDS)));
        vm.setEnv("VERIML_GAS_CAP", "2000000");
        address verifier = dv.run();
        (address registered,,,,,) = registry.models(keccak256("tiny_mlp"));
        require(registered == verifier && verifier.code.length > 0, "registered");
        // the deployed verifier checks the fixture proof through the registry
        registry.verify(
            keccak256("tiny_mlp"), TinyMlpFixture.publicInputs(), TinyMlpFixture.proof()
        );
    }

    function test_unsupportedChainIsRefused() public {
        vm.chainId(1);
        vm.setEnv("VERIML_OWNER", vm.toString(BROADCASTER));
        DeployModelRegistry d = new DeployModelRegistry();
        vm.expectRevert(abi.encodeWithSignature("UnsupportedChain(uint256)", 1));
        d.run();
    }

    function test_deployTeeRegistryOnBaseMainnetRules() public {
        vm.chainId(8453);
        vm.setEnv("VERIML_OWNER", vm.toString(BROADCASTER));
        vm.setEnv("VERIML_MAX_AGE", "600");
        vm.setEnv("VERIML_MAX_SKEW", "30");
        TeeRegistry reg = new DeployTeeRegistry().run();
        require(reg.owner() == BROADCASTER, "owner");
        require(reg.maxAge() == 600 && reg.maxSkew() == 30, "window");
    }

    function test_deployInferenceRegistryOverBothRegistries() public {
        vm.chainId(84532);
        vm.setEnv("VERIML_OWNER", vm.toString(BROADCASTER));
        vm.setEnv("VERIML_MAX_AGE", "600");
        vm.setEnv("VERIML_MAX_SKEW", "30");
        ModelRegistry models = new DeployModelRegistry().run();
        TeeRegistry tee = new DeployTeeRegistry().run();
        DeployInferenceRegistry d = new DeployInferenceRegistry();
        // an address without code is refused (a typo would otherwise brick every route)
        vm.setEnv("VERIML_MODEL_REGISTRY", vm.toString(address(0xBEEF)));
        vm.setEnv("VERIML_TEE_REGISTRY", vm.toString(address(tee)));
        vm.expectRevert(abi.encodeWithSignature("NoCode(address)", address(0xBEEF)));
        d.run();
        vm.setEnv("VERIML_MODEL_REGISTRY", vm.toString(address(models)));
        InferenceRegistry reg = d.run();
        require(address(reg.models()) == address(models), "models");
        require(address(reg.tee()) == address(tee), "tee");
        require(reg.owner() == BROADCASTER, "owner");
    }
}
