"""``python -m engine infer IN.tif OUT.tif [options]``: the command line of ``run_inference``.

``engine.cli`` calls ``add_infer_arguments(parser)`` and dispatches to ``run_infer(args)``. Every
argument's ``dest`` is the ``InferenceSettings`` field it sets, so the arguments become one
``InferenceSettings`` (checked there, against ``engine.settings.LIMITS``). Errors derived from
``EngineError`` propagate to ``engine.cli``, which prints them with the flag whose ``dest`` is the
error's ``parameter`` in front (``--overlap: overlap 32 must ...``) and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from engine.diffusion import sampler_catalog
from engine.radiometry import Radiometry
from engine.settings import DEFAULT_OVERLAP, OUTPUT_TYPES, PDT_OFF, PRECISIONS, Callbacks, InferenceSettings


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="RGB raster (any GDAL format)")
    p.add_argument("output", help="hyperspectral GeoTIFF to write (float32, one band per wavelength)")
    p.add_argument("--model", help="model bundle folder (default: the bundled model)")
    p.add_argument("--bands", default="1,2,3", help="1-based red,green,blue band numbers of the input (default 1,2,3)")
    p.add_argument("--tile", type=int,
                   help="largest tile in pixels (default: the model's own, 64 for the bundled model; memory grows "
                        "with its square)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"overlap between tiles in pixels (default {DEFAULT_OVERLAP}); half of it is mirrored "
                        "beyond the raster's border as context")
    p.add_argument("--sampler", choices=sampler_catalog.names(),
                   help=f"{sampler_catalog.help_text()} (default: the bundle's)")
    p.add_argument("--steps", type=int, help="sampler steps per stage (default: the bundle's)")
    p.add_argument("--guidance", type=float, help="ICMG guidance weight (0 turns guidance off): stage 2, and stage 1 "
                   "unless --guidance-stage1 or the model sets its own")
    p.add_argument("--guidance-stage1", type=float, help="ICMG guidance weight of stage 1 (the paper's best: 0)")
    p.add_argument("--pdt", type=float, nargs=2, metavar=("P1", "P2"), help="PDT p_T of stages 1 and 2")
    p.add_argument("--no-pdt", action="store_true", help="turn progressive dynamic truncation off")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0); the same seed gives the same output")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch", type=int, help="tiles per network call (default 8 on CUDA, 1 on the CPU); "
                                             "halved automatically on CUDA out-of-memory")
    p.add_argument("--stage1-output", metavar="F", help="also write the stage-1 (coarser spectral) image to F")
    p.add_argument("--uncertainty", dest="uncertainty_output", metavar="F",
                   help="also write the per-band standard deviation of the samples to F (needs --samples K >= 2)")
    p.add_argument("--samples", type=int, default=1, metavar="K",
                   help="average K samples drawn with seeds seed..seed+K-1 (default 1)")
    p.add_argument("--expect-bands", dest="expected_band_count", type=int, metavar="N",
                   help="refuse a model that does not output N bands")
    p.add_argument("--radiometry", choices=[r.value for r in Radiometry], default=Radiometry.AUTO.value,
                   help="what the input values mean: linear (proportional to light: reflectance, radiance, raw "
                        "DN), srgb (display-encoded, decoded before the model), auto (default: 8-bit is srgb, "
                        "anything else linear)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run the tiles on a Dask cluster: local:N starts N worker processes here (one per GPU on a "
                        "GPU machine), tcp://HOST:8786 uses a running scheduler; an output named .vrt is then written "
                        "as strips by the workers (see docs/scale-out.md). Needs pip install dask distributed")
    p.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0],
                   help="fp32 (default), or bf16 / fp16 mixed precision for the networks (faster on a GPU, "
                        "slightly different output)")
    p.add_argument("--consistency", metavar="CAMERA", default=None,
                   help="make every output spectrum integrate to the input RGB exactly: a camera response CSV "
                        "(wavelength in nm, red, green, blue), or 'estimate' to fit the response from the image "
                        "(default off)")
    p.add_argument("--band-set", default="model", metavar="BANDS",
                   help="the output's bands: model (default: the model's grid), sentinel2, landsat8-9, or a response "
                        "CSV (wavelength_nm, then one column per band): each band simulated from the spectrum "
                        "through its spectral response")
    p.add_argument("--output-type", choices=OUTPUT_TYPES, default=OUTPUT_TYPES[0],
                   help="how values are stored: float32 (default), float16 (half the size, 3 digits), uint16 / int16 "
                        "(scaled integers; GDAL and QGIS read the physical values through the band scale and offset)")
    p.add_argument("--no-overviews", dest="overviews", action="store_false",
                   help="do not build internal overviews (built for outputs over 2048 px a side: they make them "
                        "display fast)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def settings_from_arguments(args) -> InferenceSettings:
    """The parsed arguments as one InferenceSettings."""
    fields = {f.name for f in dataclasses.fields(InferenceSettings)}
    chosen = {name: value for name, value in vars(args).items() if name in fields}
    chosen["pdt"] = (PDT_OFF, PDT_OFF) if args.no_pdt else (tuple(args.pdt) if args.pdt else (None, None))
    return InferenceSettings(**chosen)


def _progress_bar(quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=1000, unit="‰", file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")


def _callbacks(bar) -> Callbacks:
    def show_progress(fraction: float, message: str) -> None:
        bar.n = int(round(1000 * max(0.0, min(1.0, fraction))))
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    def log(message: str) -> None:
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    return Callbacks(progress=show_progress if bar is not None else None, log=log)


def _summary(report) -> str:
    extras = "".join(f", {label} {path}" for label, path in
                     (("stage 1", report.stage1_output), ("uncertainty", report.uncertainty_output)) if path)
    return (f"wrote {report.output_path} ({report.width} x {report.height} px, {report.bands} bands{extras}) "
            f"in {report.seconds:.1f} s: {report.tiles_run} tiles run, {report.tiles_skipped} empty tiles skipped, "
            f"{report.megapixels_per_second:.3f} MPix/s on {report.device}")


def run_infer(args) -> int:
    from engine.raster.pipeline import run_inference

    bar = _progress_bar(args.quiet)
    try:
        report = run_inference(settings_from_arguments(args), _callbacks(bar))
    finally:
        if bar is not None:
            bar.close()
    print(_summary(report))
    return 0
