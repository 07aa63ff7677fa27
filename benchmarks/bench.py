#!/usr/bin/env python3
"""VeriML vs EZKL, side by side on the same machine in the same run.

For each model: compile/calibrate once per tool, then alternate the tools for every repetition
(setup, prove, verify). Each step runs in a process of its own; its wall time and peak RSS are
measured from here. Reports medians as a markdown table and JSON.

    python3 benchmarks/bench.py                 # tiny_mlp, digits_mlp, mnist_mlp, 3 repetitions
    python3 benchmarks/bench.py --quick         # tiny_mlp and digits_mlp, 3 repetitions
    python3 benchmarks/bench.py --no-ezkl       # VeriML only

VeriML runs with its default settings (the circuit whose Solidity verifier every shared model
deploys with). A chart (results/latest.png) is drawn with matplotlib from the same virtual
environment.

EZKL 23.0.5 is installed from PyPI into a virtual environment (default ~/.cache/veriml-bench-venv).
Both tools use a locally generated SRS (no network).
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EZKL_VERSION = "23.0.5"
DEFAULT_MODELS = ["tiny_mlp", "digits_mlp", "mnist_mlp"]


def models_dir():
    shared = os.path.join(ROOT, "..", "shared", "models")
    return shared if os.path.isdir(shared) else os.path.join(ROOT, "fixtures", "models")


def timed(cmd, env=None, timeout=None):
    """Runs cmd in a child process; returns (stdout, wall seconds, peak RSS bytes of that child).
    With a timeout (seconds) the child is killed when it runs longer (a RuntimeError saying so)."""
    wrapper = (
        "import resource,subprocess,sys,time,json;t=time.perf_counter();"
        "lim=float(sys.argv[1]) or None;"
        "\ntry:\n p=subprocess.run(sys.argv[2:],capture_output=True,text=True,timeout=lim)"
        "\nexcept subprocess.TimeoutExpired:\n print(json.dumps({'rc':'timeout','wall':time.perf_counter()-t}));sys.exit(0)\n"
        "w=time.perf_counter()-t;"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss*1024;"
        "sys.stderr.write(p.stderr);"
        "print(json.dumps({'rc':p.returncode,'out':p.stdout,'wall':w,'rss':r}))"
    )
    p = subprocess.run([sys.executable, "-c", wrapper, str(timeout or 0)] + cmd, capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise RuntimeError(f"wrapper failed: {p.stderr}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if r["rc"] == "timeout":
        raise RuntimeError(f"timed out after {r['wall']:.0f} s")
    if r["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r['rc']}): {p.stderr[-2000:]}")
    return r["out"], r["wall"], r["rss"]


def ensure_ezkl(venv):
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
    ok = subprocess.run([py, "-c", f"import ezkl,sys; sys.exit(ezkl.__version__ != '{EZKL_VERSION}')"]).returncode == 0
    if not ok:
        subprocess.check_call([py, "-m", "pip", "install", "-q", f"ezkl=={EZKL_VERSION}"])
    if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode != 0:
        subprocess.check_call([py, "-m", "pip", "install", "-q", "matplotlib"])
    return py


def build_veriml():
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "veriml-cli"], cwd=ROOT)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "veriml")


def veriml_rep(veriml, work, mdir, srs):
    res = {}
    out, wall, rss = timed([veriml, "--json", "setup", "-d", work, "--srs", srs])
    j = json.loads(out)
    res.update(setup_s=wall, setup_rss=rss, pk_bytes=j["pk_bytes"])
    out, wall, rss = timed([veriml, "--json", "prove", "-d", work, "--input", os.path.join(mdir, "input.json")])
    j = json.loads(out)
    res.update(prove_s=wall, prove_rss=rss, proof_bytes=j["proof_bytes"])
    out, wall, rss = timed([veriml, "--json", "--allow-insecure-srs", "verify", "-d", work])
    res.update(verify_s=wall)
    return res


def ezkl_rep(py, work, mdir, timeout=None):
    step = os.path.join(ROOT, "benchmarks", "ezkl_step.py")
    res = {}
    out, wall, rss = timed([py, step, "setup", work, mdir], timeout=timeout)
    res.update(setup_s=json.loads(out.strip().splitlines()[-1])["seconds"], setup_rss=rss,
               pk_bytes=json.loads(out.strip().splitlines()[-1])["pk_bytes"])
    out, wall, rss = timed([py, step, "prove", work, mdir], timeout=timeout)
    j = json.loads(out.strip().splitlines()[-1])
    res.update(prove_s=j["seconds"], prove_rss=rss, proof_bytes=j["proof_bytes"])
    out, wall, rss = timed([py, step, "verify", work, mdir])
    res.update(verify_s=json.loads(out.strip().splitlines()[-1])["seconds"])
    return res


def median(reps, key):
    return statistics.median(r[key] for r in reps)


def summarize(reps):
    keys = ["setup_s", "prove_s", "verify_s", "pk_bytes", "proof_bytes", "setup_rss", "prove_rss"]
    return {k: median(reps, k) for k in keys} | {"peak_rss": max(max(r["setup_rss"], r["prove_rss"]) for r in reps)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny_mlp and digits_mlp only")
    ap.add_argument("--no-ezkl", action="store_true")
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/veriml-bench-venv"))
    ap.add_argument("--ezkl-timeout", type=float, default=0,
                    help="seconds an EZKL step may run before it is stopped and reported as a failure (0: no limit)")
    ap.add_argument("--veriml-compile-args", default="",
                    help="extra arguments for `veriml compile` (e.g. \"--max-weight-columns 64\"), recorded in the results")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    models = ["tiny_mlp", "digits_mlp"] if args.quick else args.models.split(",")
    mroot = models_dir()
    veriml = build_veriml()
    py = None if args.no_ezkl else ensure_ezkl(args.venv)
    results = {}
    for m in models:
        mdir = os.path.join(mroot, m)
        if not os.path.isdir(mdir):
            # the benchmark's own models (wide_mlp.py)
            mdir = os.path.join(ROOT, "benchmarks", "models", m)
        base = tempfile.mkdtemp(prefix=f"bench-{m}-")
        vdir, edir = os.path.join(base, "veriml"), os.path.join(base, "ezkl")
        os.makedirs(edir)
        onnx = os.path.join(mdir, "model.onnx")
        out, _, _ = timed([veriml, "--json", "compile", onnx, "-d", vdir, "--input-range", "0,1"]
                          + args.veriml_compile_args.split())
        vinfo = json.loads(out)
        acc = json.loads(timed([veriml, "--json", "accuracy", "-d", vdir, "-s", os.path.join(mdir, "samples.json")])[0])
        # the SRS is generated once, outside the timed setup (EZKL's gen_srs is outside too)
        timed([veriml, "--json", "setup", "-d", vdir, "--insecure-dev-srs"])
        srs = os.path.join(base, "dev.srs")
        shutil.copy(os.path.join(vdir, "kzg.srs"), srs)
        einfo, efail = None, None
        limit = args.ezkl_timeout or None
        if py:
            step = os.path.join(ROOT, "benchmarks", "ezkl_step.py")
            try:
                out, _, _ = timed([py, step, "prepare", edir, mdir], timeout=limit)
                einfo = json.loads(out.strip().splitlines()[-1])
                out, _, _ = timed([py, step, "accuracy", edir, mdir], timeout=limit)
                einfo["accuracy"] = json.loads(out.strip().splitlines()[-1])
            except RuntimeError as err:
                # its calibration records the circuit size even when the SRS or the witness fails
                logrows = None
                settings = os.path.join(edir, "settings.json")
                if os.path.exists(settings):
                    logrows = json.load(open(settings))["run_args"]["logrows"]
                einfo = {"logrows": logrows, "accuracy": None}
                efail = f"preparing (calibration, SRS, witness): {str(err)[-300:]}"
        vreps, ereps = [], []
        for rep in range(args.reps):
            vreps.append(veriml_rep(veriml, vdir, mdir, srs))
            if py and not efail:
                try:
                    ereps.append(ezkl_rep(py, edir, mdir, limit))
                except RuntimeError as err:
                    # a failure is a result too (cifar_cnn: EZKL's setup is killed for memory)
                    killed = "failed (-9)" in str(err)
                    efail = "killed by the kernel (out of memory)" if killed else str(err)[-300:]
            print(f"{m} rep {rep + 1}/{args.reps}: veriml prove {vreps[-1]['prove_s']:.2f}s"
                  + (f", ezkl prove {ereps[-1]['prove_s']:.2f}s" if ereps else "")
                  + (f", ezkl {efail}" if efail else ""), file=sys.stderr)
        results[m] = {
            "veriml": summarize(vreps) | {"k": vinfo["k"], "weight_columns": vinfo["weight_columns"],
                                          "pages": vinfo.get("pages", 1),
                                          "compile_args": args.veriml_compile_args,
                                          "accuracy": acc, "reps": vreps},
            "ezkl": ({"k": einfo["logrows"], "accuracy": einfo["accuracy"], "failed": efail} if efail
                     else (summarize(ereps) | {"k": einfo["logrows"], "accuracy": einfo["accuracy"],
                                               "reps": ereps}) if py else None),
        }
        shutil.rmtree(base, ignore_errors=True)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "reps": args.reps,
        "ezkl_version": None if args.no_ezkl else EZKL_VERSION,
        "srs": "locally generated, insecure (both tools)",
        "veriml_compile_args": args.veriml_compile_args,
        "ezkl_timeout_s": args.ezkl_timeout or None,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    md = render(meta, results)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    if py:
        subprocess.check_call([py, os.path.join(ROOT, "benchmarks", "chart.py"),
                               os.path.join(args.out, "latest.json"), os.path.join(args.out, "latest.png")])
    print(md)


def fmt_bytes(b):
    return f"{b / 1e6:.1f} MB" if b < 1e9 else f"{b / 1e9:.2f} GB"


def render(meta, results):
    lines = [
        f"# VeriML vs EZKL {meta['ezkl_version'] or '(not run)'}",
        "",
        f"{meta['date']}, {meta['machine']}; medians of {meta['reps']} alternating repetitions; SRS: {meta['srs']}.",
        "Times are wall-clock seconds: VeriML's are whole processes (start, load keys, prove, write), EZKL's the",
        "library call. VeriML runs its default circuit (compile with its defaults and `--input-range 0,1`"
        + (f" and `{meta['veriml_compile_args']}`" if meta.get("veriml_compile_args") else "") + ").",
        "F = weight columns (Freivalds slots) per page, P = pages of slots.",
        "",
        "| model | tool | k | setup s | prove s | verify s | proving key | proof | peak RSS | prove speed-up | RSS vs EZKL |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        e = r["ezkl"]
        if e and e.get("failed"):
            e = None
            lines.append(f"| {m} | EZKL | {r['ezkl']['k']} | failed: {r['ezkl']['failed']} | | | | | | | |")
        rows = [("VeriML", r["veriml"]), ("EZKL", e)]
        for tool, x in rows:
            if x is None:
                continue
            is_v = tool != "EZKL"
            sp = f"{e['prove_s'] / x['prove_s']:.1f}x" if e and is_v else ""
            mem = f"{x['peak_rss'] / e['peak_rss']:.2f}" if e and is_v else ""
            kk = (f"{x['k']} (F={x['weight_columns']}, P={x.get('pages', 1)})" if is_v else f"{x['k']}")
            lines.append(
                f"| {m} | {tool} | {kk} | {x['setup_s']:.2f} | {x['prove_s']:.2f} | {x['verify_s']:.2f} | "
                f"{fmt_bytes(x['pk_bytes'])} | {x['proof_bytes']} B | {fmt_bytes(x['peak_rss'])} | {sp} | {mem} |"
            )
    lines += ["", "Accuracy of the quantized models against the float model on the 64 samples of samples.json",
              "(VeriML: exactly what its circuit proves; EZKL: its witness after `calibrate_settings`):", "",
              "| model | tool | largest abs output error | top-1 agreement |", "|---|---|---|---|"]
    for m, r in results.items():
        for tool, x in [("VeriML", r["veriml"]), ("EZKL", r["ezkl"])]:
            a = x and x.get("accuracy")
            if a:
                lines.append(f"| {m} | {tool} | {a['max_abs_error']:.6f} | {a['top1_agreement']}/{a['samples']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
