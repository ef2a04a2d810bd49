"""Quality against network evaluations, per sampler (``python -m benchmarks.sampler_quality``).

Runs one bundle on one scene crop with the paper's DDPM and the fast samplers at several step
counts and writes a Markdown table (MPSNR, SAM, RMSE, network passes, seconds) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.data import HOUSTON_SCENE
from engine.bundle import load_bundle
from engine.evaluate import evaluate_scene, sampler_settings

DEFAULT_RUNS = "ddpm:1000,ddim:50,ddim:20,ddim:10,ddim:2,ddim:1,dpmpp:20,dpmpp:10,dpmpp:5"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampler_quality", description=__doc__)
    parser.add_argument("--model", default="resources/models/scdm-default")
    parser.add_argument("--scene", default=str(HOUSTON_SCENE))
    parser.add_argument("--rgb", default="bands:4,11,22")
    parser.add_argument("--region", default="64:128,64:128")
    parser.add_argument("--runs", default=DEFAULT_RUNS)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/sampler_quality.md")
    args = parser.parse_args(argv)
    cascade = load_bundle(args.model)
    rows_text, cols_text = args.region.split(",")
    rows = tuple(int(v) for v in rows_text.split(":"))
    cols = tuple(int(v) for v in cols_text.split(":"))
    results = []
    for item in args.runs.split(","):
        name, _, steps = item.partition(":")
        settings = sampler_settings(cascade, name, int(steps), args.guidance)
        r = evaluate_scene(cascade, args.scene, args.rgb, settings, args.seed, rows, cols)
        m = r["metrics_without_input_bands"] if args.rgb.startswith("bands") else r["metrics"]
        results.append({"sampler": name, "steps": int(steps), "network_passes": r["network_passes"],
                        "seconds": r["seconds"], **m})
        print(json.dumps(results[-1]), flush=True)
    command = "python -m benchmarks.sampler_quality " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"# Sampler quality against network evaluations ({cascade.config.name})", "",
             f"Produced by `{command.strip()}` on this machine's CPU: scene {Path(args.scene).stem}, "
             f"region {args.region}, RGB {args.rgb}, guidance {sampler_settings(cascade, guidance=args.guidance).guidance}, "
             "PDT as in the bundle (DDPM truncates the guided noise, the fast samplers the predicted x_0).", "",
             "| sampler | steps per stage | network passes (both stages) | MPSNR (dB) | SAM (rad) | RMSE | MSSIM | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['network_passes']} | {r['mpsnr']:.2f} | {r['sam']:.4f} | "
                     f"{r['rmse']:.4g} | {r['mssim']:.4f} | {r['seconds']:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
