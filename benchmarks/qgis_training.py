"""A model trained through ``qgis_process`` and then used by the super-resolution algorithm, timed.

``python -m benchmarks.qgis_training --out docs/qgis-training``

Runs ``scripts/qgis_process.sh run scdm:trainspectralsuperresolution`` on a shared hyperspectral
scene (the EnMAP Potsdam mosaic, 192 x 160 px, reflectance) with a named camera (Sentinel-2's
B4, B3, B2) and a preset (``cpu`` by default), then ``scdm:spectralsuperresolution`` with the new
model on rgbn.tif; writes the commands, their wall times and the model card to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.data import SHARED_DATA
from benchmarks.generalisation import RGBN

REPO = Path(__file__).resolve().parents[1]
SCENE = SHARED_DATA / "geotiff" / "enmap_potsdam" / "enmap_potsdam_tiles_mosaic.tif"


def qgis_process(*arguments: str) -> float:
    """Seconds a ``scripts/qgis_process.sh`` run takes; SystemExit with its output when it fails."""
    command = ["bash", str(REPO / "scripts" / "qgis_process.sh"), *arguments]
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.time() - started


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "qgis-training")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "qgis-training")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--rgbn", type=Path, default=RGBN)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    model, output = args.work / f"enmap-sentinel2-{args.preset}", args.work / "rgbn_own_model.tif"
    train = ["run", "scdm:trainspectralsuperresolution", "--", f"SCENES={args.scene}", "CAMERA=sentinel2",
             f"PRESET={args.preset}", f"OUTPUT_MODEL={model}"]
    infer = ["run", "scdm:spectralsuperresolution", "--", f"INPUT={args.rgbn}", f"MODEL={model}", f"OUTPUT={output}"]
    train_seconds = qgis_process(*train)
    infer_seconds = qgis_process(*infer)
    card = (model / "MODEL_CARD.md").read_text()
    result = {"train_command": "scripts/qgis_process.sh " + " ".join(train), "train_seconds": round(train_seconds),
              "infer_command": "scripts/qgis_process.sh " + " ".join(infer), "infer_seconds": round(infer_seconds, 1)}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    lines = ["# A model trained in QGIS", "",
             "Produced by `python -m benchmarks.qgis_training " + " ".join(sys.argv[1:] if argv is None else argv)
             + "` on this machine (2 CPU cores, no GPU).", "",
             f"Training (`{result['train_command']}`): **{train_seconds / 60:.1f} min** wall time, qgis_process "
             "start included.", "",
             f"The new model on the demo image (`{result['infer_command']}`): {infer_seconds:.1f} s.", "",
             "The model card it wrote:", "", *("> " + line if line else ">" for line in card.splitlines()), ""]
    (args.out / "README.md").write_text("\n".join(lines))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
