// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.19;

import {Vm} from "forge-std/Vm.sol";
import {TeeRegistry} from "../src/TeeRegistry.sol";

contract TeeRegistryTest {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 internal constant OP1 = 0xA1;
    uint256 internal constant OP2 = 0xA2;
    uint256 internal constant OP3 = 0xA3;
    uint256 internal constant OUTSIDER = 0xB1;
    uint256 internal constant ENCLAVE = 0xE1;
    bytes32 internal constant MEASUREMENT = keccak256("launch measurement");
    uint64 internal constant T0 = 1_800_000_000;

    TeeRegistry internal reg;
    address internal key;

    function setUp() public {
        vm.warp(T0);
        reg = new TeeRegistry(address(this), 600, 30);
        reg.setAttestationVerifier(vm.addr(OP1), true);
        reg.setAttestationVerifier(vm.addr(OP2), true);
        reg.setAttestationVerifier(vm.addr(OP3), true);
        reg.setQuorum(2);
        key = vm.addr(ENCLAVE);
    }

    function sig(uint256 pk, bytes32 digest) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    function approvals(uint256 a, uint256 b, uint64 expiry) internal returns (bytes[] memory s) {
        bytes32 d = reg.registrationDigest(key, MEASUREMENT, 7, expiry);
        s = new bytes[](2);
        s[0] = sig(a, d);
        s[1] = sig(b, d);
    }

    function register() internal {
        reg.registerEnclave(key, MEASUREMENT, 7, T0 + 1 days, approvals(OP1, OP2, T0 + 1 days));
    }

    function receipt(bytes32 nonce) internal view returns (TeeRegistry.Receipt memory) {
        return TeeRegistry.Receipt({
            chainId: block.chainid,
            modelId: keccak256("gpt-like"),
            requestHash: keccak256("request"),
            responseHash: keccak256("response"),
            timestamp: uint64(block.timestamp),
            nonce: nonce
        });
    }

    function signReceipt(uint256 pk, TeeRegistry.Receipt memory r) internal returns (bytes memory) {
        return sig(pk, this.digestOf(r));
    }

    function digestOf(TeeRegistry.Receipt calldata r) external view returns (bytes32) {
        return reg.receiptDigest(r);
    }

    function test_registeredKeyVerifiesAReceiptOnce() public {
        register();
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(1)));
        bytes memory s = signReceipt(ENCLAVE, r);
        require(reg.verifyReceipt(r, s) == key, "signer");
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.NonceUsed.selector, r.nonce));
        reg.verifyReceipt(r, s);
    }

    function test_changedResponseHashFails() public {
        register();
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(2)));
        bytes memory s = signReceipt(ENCLAVE, r);
        r.responseHash = keccak256("another response");
        // the signature now recovers to some other address: not a registered key
        address other = ecrecoverOf(r, s);
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.UnknownKey.selector, other));
        reg.verifyReceipt(r, s);
    }

    function ecrecoverOf(TeeRegistry.Receipt memory r, bytes memory s)
        internal
        view
        returns (address)
    {
        bytes32 d = this.digestOf(r);
        bytes32 rr;
        bytes32 ss;
        uint8 v;
        assembly {
            rr := mload(add(s, 32))
            ss := mload(add(s, 64))
            v := byte(0, mload(add(s, 96)))
        }
        return ecrecover(d, v, rr, ss);
    }

    function test_expiredKeyFails() public {
        register();
        vm.warp(T0 + 1 days);
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(3)));
        bytes memory s = signReceipt(ENCLAVE, r);
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.KeyExpired.selector, key, T0 + 1 days));
        reg.verifyReceipt(r, s);
    }

    function test_revokedKeyFails() public {
        register();
        reg.revokeEnclave(key);
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(4)));
        bytes memory s = signReceipt(ENCLAVE, r);
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.KeyRevoked.selector, key));
        reg.verifyReceipt(r, s);
    }

    function test_revokedMeasurementFailsForReceiptsAndRegistrations() public {
        register();
        reg.revokeMeasurement(MEASUREMENT);
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(5)));
        bytes memory s = signReceipt(ENCLAVE, r);
        vm.expectRevert(
            abi.encodeWithSelector(TeeRegistry.MeasurementIsRevoked.selector, MEASUREMENT)
        );
        reg.verifyReceipt(r, s);
        bytes[] memory a = approvals(OP1, OP2, T0 + 2 days);
        vm.expectRevert(
            abi.encodeWithSelector(TeeRegistry.MeasurementIsRevoked.selector, MEASUREMENT)
        );
        reg.registerEnclave(key, MEASUREMENT, 7, T0 + 2 days, a);
    }

    function test_unregisteredKeyFails() public {
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(6)));
        bytes memory s = signReceipt(ENCLAVE, r);
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.UnknownKey.selector, key));
        reg.verifyReceipt(r, s);
    }

    function test_staleAndFutureReceiptsFail() public {
        register();
        vm.warp(T0 + 1000);
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(7)));
        r.timestamp = T0 + 1000 - 601;
        bytes memory s = signReceipt(ENCLAVE, r);
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.StaleReceipt.selector, r.timestamp));
        reg.verifyReceipt(r, s);
        r.timestamp = T0 + 1000 + 31;
        s = signReceipt(ENCLAVE, r);
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.FutureReceipt.selector, r.timestamp));
        reg.verifyReceipt(r, s);
    }

    function test_wrongChainFails() public {
        register();
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(8)));
        r.chainId = block.chainid + 1;
        bytes memory s = signReceipt(ENCLAVE, r);
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.WrongChain.selector, r.chainId));
        reg.verifyReceipt(r, s);
    }

    function test_malleableOrMalformedSignatureFails() public {
        register();
        TeeRegistry.Receipt memory r = receipt(bytes32(uint256(9)));
        bytes memory s = signReceipt(ENCLAVE, r);
        // the high-s twin of a valid signature
        bytes32 rr;
        bytes32 ss;
        uint8 v;
        assembly {
            rr := mload(add(s, 32))
            ss := mload(add(s, 64))
            v := byte(0, mload(add(s, 96)))
        }
        uint256 n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141;
        bytes memory twin =
            abi.encodePacked(rr, bytes32(n - uint256(ss)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(TeeRegistry.BadSignature.selector);
        reg.verifyReceipt(r, twin);
        vm.expectRevert(TeeRegistry.BadSignature.selector);
        reg.verifyReceipt(r, abi.encodePacked(rr, ss));
    }

    function test_registrationNeedsAQuorumOfDistinctVerifiers() public {
        uint64 expiry = T0 + 1 days;
        bytes32 d = reg.registrationDigest(key, MEASUREMENT, 7, expiry);
        bytes[] memory s = new bytes[](3);
        s[0] = sig(OP1, d);
        s[1] = sig(OP1, d); // the same verifier twice counts once
        s[2] = sig(OUTSIDER, d); // not a configured verifier
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.QuorumNotReached.selector, 1, 2));
        reg.registerEnclave(key, MEASUREMENT, 7, expiry, s);
        // approvals for other terms do not count
        bytes[] memory other = approvals(OP1, OP2, expiry + 1);
        vm.expectRevert(abi.encodeWithSelector(TeeRegistry.QuorumNotReached.selector, 0, 2));
        reg.registerEnclave(key, MEASUREMENT, 7, expiry, other);
        bytes[] memory ok = approvals(OP2, OP3, expiry);
        reg.registerEnclave(key, MEASUREMENT, 7, expiry, ok);
    }

    function test_registrationThatIsAlreadyExpiredFails() public {
        bytes[] memory a = approvals(OP1, OP2, T0);
        vm.expectRevert(TeeRegistry.AlreadyExpired.selector);
        reg.registerEnclave(key, MEASUREMENT, 7, T0, a);
    }

    function test_onlyOwnerConfiguresAndRevokes() public {
        vm.prank(vm.addr(OUTSIDER));
        vm.expectRevert(TeeRegistry.NotOwner.selector);
        reg.setAttestationVerifier(vm.addr(OUTSIDER), true);
        vm.prank(vm.addr(OUTSIDER));
        vm.expectRevert(TeeRegistry.NotOwner.selector);
        reg.revokeEnclave(key);
        vm.expectRevert(TeeRegistry.BadQuorum.selector);
        reg.setQuorum(0);
    }
}
