#!/usr/bin/env python3
"""Draws results/latest.png from results/latest.json: median prove time and peak memory per model,
VeriML beside EZKL, with the speed-up written over each VeriML bar.

    python chart.py results/latest.json results/latest.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TOOLS = [("veriml", "VeriML", "#2b6cb0"), ("ezkl", "EZKL", "#c05621")]


def main(src, dst):
    with open(src) as f:
        data = json.load(f)
    results, meta = data["results"], data["meta"]
    models = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(TOOLS)
    for ax, key, label, scale in (
        (axes[0], "prove_s", "median prove time (s, log scale)", 1.0),
        (axes[1], "peak_rss", "peak memory (MB, log scale)", 1e-6),
    ):
        for t, (tool, name, color) in enumerate(TOOLS):
            xs, ys = [], []
            for i, m in enumerate(models):
                x = results[m].get(tool)
                if x and not x.get("failed"):
                    xs.append(i + (t - 1) * width)
                    ys.append(x[key] * scale)
            if not xs:
                continue
            bars = ax.bar(xs, ys, width, label=name, color=color)
            if key == "prove_s" and tool != "ezkl":
                for b, m in zip(bars, [m for m in models if results[m].get(tool)]):
                    e = results[m].get("ezkl")
                    if e and not e.get("failed"):
                        ax.annotate(f"{e['prove_s'] / results[m][tool]['prove_s']:.1f}x",
                                    (b.get_x() + b.get_width() / 2, b.get_height()),
                                    ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"VeriML vs EZKL {meta.get('ezkl_version') or ''}: {meta['machine'].split(',')[1].strip()}, "
                 f"{meta['date'][:10]}, medians of {meta['reps']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
