// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.19;

import {ModelRegistry} from "../src/ModelRegistry.sol";
import {TeeRegistry} from "../src/TeeRegistry.sol";
import {InferenceRegistry} from "../src/InferenceRegistry.sol";

/// The cheatcodes these scripts use (forge-std 1.1.2 from npm predates the env ones).
interface DeployVm {
    function envAddress(string calldata name) external view returns (address);
    function envBytes(string calldata name) external view returns (bytes memory);
    function envBytes32(string calldata name) external view returns (bytes32);
    function envUint(string calldata name) external view returns (uint256);
    function startBroadcast() external;
    function stopBroadcast() external;
}

abstract contract BaseScript {
    DeployVm internal constant vm =
        DeployVm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 internal constant BASE_MAINNET = 8453;
    uint256 internal constant BASE_SEPOLIA = 84532;
    uint256 internal constant LOCAL = 31337;

    error UnsupportedChain(uint256 chainId);

    function checkChain() internal view {
        if (
            block.chainid != BASE_MAINNET && block.chainid != BASE_SEPOLIA && block.chainid != LOCAL
        ) {
            revert UnsupportedChain(block.chainid);
        }
    }
}

/// VERIML_OWNER=0x... forge script verifier-contracts/script/Deploy.s.sol:DeployModelRegistry
///   --rpc-url $RPC --broadcast (Base mainnet 8453 or Base Sepolia 84532)
contract DeployModelRegistry is BaseScript {
    function run() external returns (ModelRegistry registry) {
        checkChain();
        address owner = vm.envAddress("VERIML_OWNER");
        vm.startBroadcast();
        registry = new ModelRegistry(owner);
        vm.stopBroadcast();
    }
}

/// Deploys a generated verifier (VERIML_VERIFIER_BYTECODE: creation code from Verifier.json) and
/// registers it in VERIML_REGISTRY under VERIML_MODEL_ID, with VERIML_WEIGHTS_HASH,
/// VERIML_INPUT_WORDS, VERIML_OUTPUT_WORDS and VERIML_GAS_CAP. The broadcaster must own the registry.
contract DeployVerifier is BaseScript {
    error DeploymentFailed();

    function run() external returns (address verifier) {
        checkChain();
        bytes memory code = vm.envBytes("VERIML_VERIFIER_BYTECODE");
        ModelRegistry registry = ModelRegistry(vm.envAddress("VERIML_REGISTRY"));
        vm.startBroadcast();
        assembly {
            verifier := create(0, add(code, 0x20), mload(code))
        }
        if (verifier == address(0)) revert DeploymentFailed();
        registry.registerModel(
            vm.envBytes32("VERIML_MODEL_ID"),
            verifier,
            vm.envBytes32("VERIML_WEIGHTS_HASH"),
            uint32(vm.envUint("VERIML_INPUT_WORDS")),
            uint32(vm.envUint("VERIML_OUTPUT_WORDS")),
            uint64(vm.envUint("VERIML_GAS_CAP"))
        );
        vm.stopBroadcast();
    }
}

/// VERIML_OWNER, VERIML_MAX_AGE, VERIML_MAX_SKEW (seconds).
contract DeployTeeRegistry is BaseScript {
    function run() external returns (TeeRegistry registry) {
        checkChain();
        address owner = vm.envAddress("VERIML_OWNER");
        uint64 maxAge = uint64(vm.envUint("VERIML_MAX_AGE"));
        uint64 maxSkew = uint64(vm.envUint("VERIML_MAX_SKEW"));
        vm.startBroadcast();
        registry = new TeeRegistry(owner, maxAge, maxSkew);
        vm.stopBroadcast();
    }
}

/// VERIML_OWNER, VERIML_MODEL_REGISTRY, VERIML_TEE_REGISTRY: the InferenceRegistry over an
/// existing ModelRegistry and TeeRegistry. The owner then routes each catalogue id with
/// `setRoute(keccak256(id), 1, modelRegistryId)` (open) or `setRoute(keccak256(id), 2,
/// keccak256(providerModel))` (closed).
contract DeployInferenceRegistry is BaseScript {
    error NoCode(address at);

    function run() external returns (InferenceRegistry registry) {
        checkChain();
        address owner = vm.envAddress("VERIML_OWNER");
        ModelRegistry models = ModelRegistry(vm.envAddress("VERIML_MODEL_REGISTRY"));
        TeeRegistry tee = TeeRegistry(vm.envAddress("VERIML_TEE_REGISTRY"));
        if (address(models).code.length == 0) revert NoCode(address(models));
        if (address(tee).code.length == 0) revert NoCode(address(tee));
        vm.startBroadcast();
        registry = new InferenceRegistry(models, tee, owner);
        vm.stopBroadcast();
    }
}
