#!/usr/bin/env bash
# The README's dApp walkthrough, end to end on this machine: a local chain (anvil, Base Sepolia's
# chain id), an open model (proven) and a closed model (a TEE runner in simulated mode in front of a
# stand-in provider) behind one gateway, both results settled in the InferenceRegistry and one read
# by the sample consumer contract. Nothing leaves the machine.
#
# Needs `veriml` and `veriml-tee-runner` on PATH (cargo build --release -p veriml-cli -p veriml-tee,
# then PATH="$CARGO_TARGET_DIR/release:$PATH", target/release by default) and `npm ci` done.
# Ports: ANVIL_PORT (8545), PROVIDER_PORT (8099), RUNNER_PORT (8088), GATEWAY_PORT (8080).
# Work files go to $VERIML_WALKTHROUGH_DIR (default: a new temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${VERIML_WALKTHROUGH_DIR:-$(mktemp -d)}
mkdir -p "$W"
ANVIL_PORT=${ANVIL_PORT:-8545}
PROVIDER_PORT=${PROVIDER_PORT:-8099}
RUNNER_PORT=${RUNNER_PORT:-8088}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
export PATH="$ROOT/node_modules/.bin:$PATH"
export VERIML_SOLC="$ROOT/scripts/solc"
export VERIML_RPC_URL="http://127.0.0.1:$ANVIL_PORT"
# anvil's first two development accounts (well-known keys, never funded on a real chain)
export VERIML_PRIVATE_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
export VERIML_OPERATOR_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
OWNER=$(cast wallet address --private-key "$VERIML_PRIVATE_KEY")
OPERATOR=$(cast wallet address --private-key "$VERIML_OPERATOR_KEY")
GATEWAY="http://127.0.0.1:$GATEWAY_PORT"
TX=(--rpc-url "$VERIML_RPC_URL" --private-key "$VERIML_PRIVATE_KEY")

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
step() { printf '\n== %s\n' "$*"; }
wait_for() { # URL: until it answers (10 s)
  for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
  echo "no answer from $1" >&2
  exit 1
}
field() { # FILE KEY...: a JSON field
  python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2:]: v=v[int(k)] if isinstance(v,list) else v[k]
print(v)' "$@"
}
deployed() { awk '/Deployed to:/ {print $3}'; }

step "1. a local chain"
anvil --port "$ANVIL_PORT" --chain-id 84532 --hardfork osaka --silent &
pids+=($!)
for _ in $(seq 100); do cast chain-id --rpc-url "$VERIML_RPC_URL" >/dev/null 2>&1 && break; sleep 0.1; done

step "2. the open model: compiled, keys (development SRS), verifier deployed with a ModelRegistry"
veriml example -d "$W/digits"
veriml --allow-insecure-srs create-evm-verifier -d "$W/digits"
veriml --allow-insecure-srs --json deploy -d "$W/digits" >"$W/deploy.json"
MODEL_REGISTRY=$(field "$W/deploy.json" registry)
ZK_MODEL_ID=$(field "$W/deploy.json" model_id)

step "3. the closed model: a stand-in provider and the TEE runner (simulated SEV-SNP)"
python3 scripts/stand-in-provider.py "$PROVIDER_PORT" &
pids+=($!)
VERIML_TEE_LISTEN="127.0.0.1:$RUNNER_PORT" VERIML_TEE_UPSTREAM_URL="http://127.0.0.1:$PROVIDER_PORT" \
  veriml-tee-runner --config tee-runner/examples/runner-local.json --write-simulated-root "$W/simulated-root.der" &
pids+=($!)
wait_for "http://127.0.0.1:$RUNNER_PORT/health"
MEASUREMENT=$(printf '0%.0s' $(seq 96)) # the simulated runner's launch measurement

step "4. the TeeRegistry; an attestation verifier attests the runner and registers its key"
TEE=$(forge create verifier-contracts/src/TeeRegistry.sol:TeeRegistry "${TX[@]}" --broadcast \
  --constructor-args "$OWNER" 600 30 | deployed)
cast send "$TEE" "setAttestationVerifier(address,bool)" "$OPERATOR" true "${TX[@]}" >/dev/null
cast send "$TEE" "setQuorum(uint256)" 1 "${TX[@]}" >/dev/null
veriml tee-register --runner "http://127.0.0.1:$RUNNER_PORT" --registry "$TEE" \
  --measurement "$MEASUREMENT" --simulated-root "$W/simulated-root.der"

step "5. the InferenceRegistry, a route per catalogue id, and the sample consumer"
INFERENCE=$(forge create verifier-contracts/src/InferenceRegistry.sol:InferenceRegistry "${TX[@]}" \
  --broadcast --constructor-args "$MODEL_REGISTRY" "$TEE" "$OWNER" | deployed)
cast send "$INFERENCE" "setRoute(bytes32,uint8,bytes32)" "$(cast keccak digits)" 1 "$ZK_MODEL_ID" "${TX[@]}" >/dev/null
cast send "$INFERENCE" "setRoute(bytes32,uint8,bytes32)" "$(cast keccak chat)" 2 "$(cast keccak stand-in-chat)" \
  "${TX[@]}" >/dev/null
CONSUMER=$(forge create verifier-contracts/src/InferenceRegistry.sol:ClassificationConsumer "${TX[@]}" \
  --broadcast --constructor-args "$INFERENCE" "$(cast keccak digits)" | deployed)

step "6. the catalogue and the gateway"
export VERIML_CATALOGUE="$W/veriml-models.json"
veriml models add digits --dir "$W/digits"
veriml models add chat --provider "http://127.0.0.1:$PROVIDER_PORT" --provider-model stand-in-chat \
  --runner "http://127.0.0.1:$RUNNER_PORT" --measurement "$MEASUREMENT"
veriml serve --listen "127.0.0.1:$GATEWAY_PORT" --db "$W/jobs.sqlite" \
  --tee-simulated-root "$W/simulated-root.der" &
pids+=($!)
wait_for "$GATEWAY/health"

step "7. one request of each kind"
INPUT=$(python3 -c 'import json; print(json.dumps(json.load(open("examples/digits_mlp/input.json"))["input_data"][0]))')
curl -sf "$GATEWAY/v1/infer" -H 'content-type: application/json' \
  -d "{\"model\": \"digits\", \"input\": $INPUT}" >"$W/job.json"
JOB=$(field "$W/job.json" id)
curl -sfN "$GATEWAY/v1/jobs/$JOB/events" | grep '^data:' | cut -c1-120 # progress until done
curl -sf "$GATEWAY/v1/jobs/$JOB" >"$W/job.json"
curl -sf "$GATEWAY/v1/infer" -H 'content-type: application/json' \
  -d '{"model": "chat", "input": {"messages": [{"role": "user", "content": "Is 7 prime?"}]}}' >"$W/chat.json"
field "$W/chat.json" receipt output

step "8. the settlement agent checks both receipts and settles them"
veriml --allow-insecure-srs settle --registry "$INFERENCE" --gateway "$GATEWAY" --db "$W/settle.sqlite"

step "9. a consumer contract acts on the settled results"
INPUT_HASH=$(field "$W/job.json" receipt input_hash)
OUTPUT_WORDS=$(python3 - "$W/job.json" "$W/deploy.json" <<'PY'
import json, sys
job, dep = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
words = job["receipt"]["evidence"]["proof"]["instances"][dep["input_words"]:]
print("[" + ",".join("0x" + w.removeprefix("0x") for w in words) + "]")
PY
)
cast send "$CONSUMER" "accept(bytes32,uint256[])" "$INPUT_HASH" "$OUTPUT_WORDS" "${TX[@]}" >/dev/null
echo "consumer accepted output $(cast call "$CONSUMER" "acceptedOutput(bytes32)(bytes32)" "$INPUT_HASH" --rpc-url "$VERIML_RPC_URL") for input $INPUT_HASH"
SETTLED=$(cast call "$INFERENCE" "isSettled(bytes32,bytes32,bytes32)(bool)" "$(cast keccak chat)" \
  "$(field "$W/chat.json" receipt input_hash)" "$(field "$W/chat.json" receipt output_hash)" --rpc-url "$VERIML_RPC_URL")
echo "chat result settled: $SETTLED"
test "$SETTLED" = true
echo "walkthrough complete (work files in $W)"
