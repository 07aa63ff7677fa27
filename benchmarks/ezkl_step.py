"""Runs one EZKL step in its own process (so its peak memory is measured alone).

Usage: ezkl_step.py STEP WORKDIR MODEL_DIR
Prints one JSON line: {"step": ..., "seconds": ...} plus step-specific facts.
"""
import json
import os
import sys
import time

import ezkl


def main():
    step, work, model_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    p = lambda name: os.path.join(work, name)
    onnx = os.path.join(model_dir, "model.onnx")
    data = os.path.join(model_dir, "input.json")
    out = {"step": step}
    t = time.perf_counter()
    if step == "prepare":
        # EZKL's own calibration, target "resources" (its default advice for speed)
        ezkl.gen_settings(onnx, p("settings.json"))
        ezkl.calibrate_settings(data, onnx, p("settings.json"), "resources")
        ezkl.compile_circuit(onnx, p("model.compiled"), p("settings.json"))
        logrows = json.load(open(p("settings.json")))["run_args"]["logrows"]
        # no network here: a locally generated (insecure) SRS, as VeriML's benchmark uses
        ezkl.gen_srs(p("kzg.srs"), logrows)
        ezkl.gen_witness(data, p("model.compiled"), p("witness.json"))
        out["logrows"] = logrows
    elif step == "setup":
        ezkl.setup(p("model.compiled"), p("vk.key"), p("pk.key"), p("kzg.srs"))
        out["pk_bytes"] = os.path.getsize(p("pk.key"))
    elif step == "prove":
        ezkl.gen_witness(data, p("model.compiled"), p("witness.json"))
        t = time.perf_counter()
        ezkl.prove(p("witness.json"), p("model.compiled"), p("pk.key"), p("proof.json"), p("kzg.srs"))
        proof = json.load(open(p("proof.json")))
        out["proof_bytes"] = len(proof.get("proof", [])) if isinstance(proof.get("proof"), list) else len(bytes.fromhex(proof.get("hex_proof", "0x")[2:]))
    elif step == "accuracy":
        # EZKL's quantized outputs on every sample against the float outputs (what VeriML reports too)
        samples = json.load(open(os.path.join(model_dir, "samples.json")))
        worst, agree = 0.0, 0
        flat = lambda v: [x for row in v for x in flat(row)] if isinstance(v, list) else [v]
        for x, want in zip(samples["inputs"], samples["float_outputs"]):
            json.dump({"input_data": [flat(x)]}, open(p("sample.json"), "w"))
            ezkl.gen_witness(p("sample.json"), p("model.compiled"), p("sample_witness.json"))
            got = [float(v) for v in flat(json.load(open(p("sample_witness.json")))["pretty_elements"]["rescaled_outputs"])]
            want = flat(want)
            worst = max(worst, max(abs(a - b) for a, b in zip(got, want)))
            agree += got.index(max(got)) == want.index(max(want))
        out.update(max_abs_error=worst, top1_agreement=agree, samples=len(samples["inputs"]))
    elif step == "verify":
        ok = ezkl.verify(p("proof.json"), p("settings.json"), p("vk.key"), p("kzg.srs"))
        assert ok
    else:
        raise SystemExit(f"unknown step {step}")
    out["seconds"] = time.perf_counter() - t
    print(json.dumps(out))


if __name__ == "__main__":
    main()
