"""``python -m engine train | sample | evaluate | bench | infer``.

Exit status: 0 done; 2 an engine error (a refused setting or input, an output that could not be
written: the message names it); 130 stopped by Ctrl-C (SIGINT), 143 by SIGTERM, 129 by SIGHUP
(128 + the signal's number, as shells report it). A stopped run cleans up as after an error: an
``infer`` run removes its partial files and leaves every destination as it was.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Dict, Mapping

from engine.diffusion import sampler_catalog
from engine.errors import EngineError, Terminated

EXIT_ERROR = 2
# Signals that stop a run the way Ctrl-C does (SIGINT raises KeyboardInterrupt by itself).
TERMINATING_SIGNALS = ("SIGTERM", "SIGHUP")


def _add_sampler_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=sampler_catalog.names(),
                   help=f"{sampler_catalog.help_text()} (default: the bundle's)")
    p.add_argument("--steps", type=int,
                   help="network evaluations per stage (default: the bundle's; a sampler over all steps ignores it)")
    p.add_argument("--guidance", type=float, help="ICMG weight s (0 turns guidance off); stage 2, and stage 1 "
                   "unless --guidance-stage1 or the bundle sets its own")
    p.add_argument("--guidance-stage1", type=float, help="ICMG weight of stage 1 (the paper's best setting: 0)")
    p.add_argument("--pdt", type=float, nargs=2, metavar=("P1", "P2"), help="PDT p_T of stages 1 and 2")
    p.add_argument("--no-pdt", action="store_true", help="turn progressive dynamic truncation off")
    p.add_argument("--truncation-target", choices=["eps", "x_t", "x0"],
                   help="what PDT clamps: eps (paper), x_t (authors' code) or x0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def _settings(cascade, args):
    from engine.evaluate import sampler_settings

    return sampler_settings(cascade, args.sampler, args.steps, args.guidance,
                            tuple(args.pdt) if args.pdt else (None, None), args.truncation_target,
                            no_pdt=args.no_pdt, guidance_stage1=args.guidance_stage1)


def _load(args):
    from engine.bundle import default_bundle_path, load_bundle
    from engine.device import resolve_device

    return load_bundle(args.model or default_bundle_path(), resolve_device(args.device))


def _region(text):
    if not text:
        return None, None
    try:
        rows, cols = text.split(",")
        r0, r1 = (int(v) for v in rows.split(":"))
        c0, c1 = (int(v) for v in cols.split(":"))
    except ValueError:
        raise EngineError(f"cannot read {text!r}: use ROW0:ROW1,COL0:COL1", parameter="region") from None
    return (r0, r1), (c0, c1)


def cmd_train(args) -> int:
    from engine.evaluate import save_json
    from engine.train import train

    result = train(args.config, resume=args.resume, seed=args.seed, iterations=args.iterations,
                   device=args.device)
    training = result["training"]
    for stage, loss in training["loss"].items():
        if loss["first"] is not None:
            print(f"{stage}: loss {loss['first']:.4f} -> {loss['last']:.4f}")
    print(f"bundle written to {result['output']} in {training['seconds']} s")
    if args.json:
        save_json(result, args.json)
    return 0


def cmd_sample(args) -> int:
    import numpy as np

    from engine.data import load_scene, scene_on_grid
    from engine.evaluate import parse_rgb_spec, reconstruct, scene_rgb

    cascade = _load(args)
    settings = _settings(cascade, args)
    rows, cols = _region(args.region)
    kind, value = parse_rgb_spec(args.rgb)
    scene = load_scene(args.scene, rows, cols)
    cube, _ = scene_on_grid(scene, cascade.config.wavelengths_nm, cascade.config.fwhm_nm)
    rgb = scene_rgb(scene, cube, kind, value)
    rec = reconstruct(cascade, rgb, settings, args.seed, scene.valid, samples=args.samples)
    np.savez_compressed(args.out, cube=np.moveaxis(rec.full, 0, -1), stage1=np.moveaxis(rec.stage1, 0, -1),
                        wavelengths_nm=np.asarray(cascade.config.wavelengths_nm), rgb=np.moveaxis(rgb, 0, -1))
    print(f"{args.out}: {rec.full.shape[0]} bands, {rec.nfe} predictor calls, {rec.seconds:.1f} s")
    return 0


def cmd_evaluate(args) -> int:
    from engine.evaluate import evaluate_scene, save_json, write_figures

    cascade = _load(args)
    settings = _settings(cascade, args)
    rows, cols = _region(args.region)
    result = evaluate_scene(cascade, args.scene, args.rgb, settings, args.seed, rows, cols, samples=args.samples)
    m, mx = result["metrics"], result["metrics_without_input_bands"]
    print(f"{result['scene']}  {settings.name} steps={settings.steps} guidance={settings.guidance} "
          f"samples={args.samples} network passes={result['network_passes']}  {result['seconds']} s")
    print(f"RMSE {m['rmse']:.2f}  MPSNR {m['mpsnr']:.2f} dB  MSSIM {m['mssim']:.4f}  SAM {m['sam']:.4f} rad")
    if mx != m:
        print(f"without input bands: RMSE {mx['rmse']:.2f}  MPSNR {mx['mpsnr']:.2f} dB  "
              f"MSSIM {mx['mssim']:.4f}  SAM {mx['sam']:.4f} rad")
    if args.figures:
        result["figures"] = write_figures(result, cascade.config.wavelengths_nm, args.figures)
        print("figures:", ", ".join(result["figures"]))
    if args.json:
        save_json(result, args.json)
    return 0


def cmd_bench(args) -> int:
    import numpy as np
    import torch

    from engine.diffusion.noise import PositionalNoise
    from engine.evaluate import sampler_settings, save_json

    cascade = _load(args)
    torch.manual_seed(0)
    # A random RGB through the bundle's input transform, as the raster pipeline conditions a tile.
    transform = cascade.config.normalisation
    images = np.random.default_rng(0).random((args.batch, 3, args.size, args.size)).astype(np.float32)
    stats = cascade.image_statistics(images[0], None)
    rgb = torch.from_numpy(np.stack([transform.condition(image, stats) for image in images]).astype(np.float32))
    megapixels = args.batch * args.size * args.size / 1e6
    print(f"model {cascade.config.name} on {cascade.device}, {args.batch} x {args.size}x{args.size} tile(s), "
          f"guidance {args.guidance}")
    print(f"{'sampler':<8}{'steps':>6}{'predictor calls':>17}{'network passes':>16}{'seconds':>10}{'s/MP':>10}")
    rows = []
    for item in args.samplers.split(","):
        name, _, steps = item.partition(":")
        settings = sampler_settings(cascade, name, int(steps or 1000), args.guidance)
        noise = PositionalNoise(0, [(0, i * args.size) for i in range(args.batch)])
        started = time.perf_counter()
        out = cascade.sample(rgb, settings, noise)
        if cascade.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        rows.append({"sampler": name, "steps": cascade.steps_per_stage(settings),
                     "nfe": out.nfe, "network_passes": out.network_passes, "seconds": round(seconds, 3),
                     "seconds_per_megapixel": round(seconds / megapixels, 2)})
        r = rows[-1]
        print(f"{name:<8}{r['steps']:>6}{r['nfe']:>17}{r['network_passes']:>16}{seconds:>10.2f}"
              f"{r['seconds_per_megapixel']:>10.1f}")
        assert np.isfinite(out.full.cpu().numpy()).all()
    if args.json:
        save_json({"device": str(cascade.device), "size": args.size, "batch": args.batch, "rows": rows}, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one or both stages from a JSON config")
    p.add_argument("--config", required=True)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--seed", type=int)
    p.add_argument("--iterations", type=int, help="train every network (mean networks too) this many iterations instead of the config's (a quick run)")
    p.add_argument("--device", help="auto, cpu or cuda[:N] (default: the config's)")
    p.add_argument("--json", help="write the summary and loss curves here")
    p.set_defaults(func=cmd_train)

    for name, func, text in (("sample", cmd_sample, "reconstruct a scene's cube from its simulated RGB"),
                             ("evaluate", cmd_evaluate, "reconstruct a scene and print RMSE, MPSNR, MSSIM, SAM")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--model", help="bundle folder (default: the bundled model)")
        p.add_argument("--scene", required=True, help="scene .npz or spectral GeoTIFF")
        p.add_argument("--rgb", default="bands:4,11,22", help="bands:R,G,B (0-based) or srf:FILE.csv")
        p.add_argument("--region", help="ROW0:ROW1,COL0:COL1 crop of the scene")
        p.add_argument("--samples", type=int, default=1, help="average K samples (the posterior mean estimate)")
        _add_sampler_arguments(p)
        if name == "sample":
            p.add_argument("--out", required=True, help="output .npz")
        else:
            p.add_argument("--json", help="write the metrics here")
            p.add_argument("--figures", help="folder for per-band PSNR and spectral-profile PNGs")
        p.set_defaults(func=func)

    p = sub.add_parser("bench", help="network evaluations and seconds per megapixel, per sampler")
    p.add_argument("--model", help="bundle folder (default: the bundled model)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--samplers", default="ddpm:1000,ddim:50,ddim:20,dpmpp:20,dpmpp:10")
    p.add_argument("--device", default="auto")
    p.add_argument("--json")
    p.set_defaults(func=cmd_bench)

    from engine.raster import cli as raster_cli

    p = sub.add_parser("infer", help="spectral super-resolution of a georeferenced RGB raster")
    raster_cli.add_infer_arguments(p)
    p.set_defaults(func=raster_cli.run_infer)
    for command in sub.choices.values():
        command.set_defaults(setting_flags=setting_flags(command))
    return parser


def setting_flags(command: argparse.ArgumentParser) -> Dict[str, str]:
    """{setting: the flag that sets it} of one subcommand. An argument's ``dest`` is the setting's
    name (the ``InferenceSettings`` field, or e.g. ``region``); a positional argument is named by it."""
    return {action.dest: (action.option_strings or [action.dest])[0] for action in command._actions}


def error_message(exc: EngineError, flags: Mapping[str, str]) -> str:
    """How the command line shows an engine error: the flag that set ``exc.parameter`` in front
    ("--overlap: overlap 32 must ..."); the message alone for an error about no flag of this command."""
    flag = flags.get(exc.parameter)
    return f"{flag}: {exc}" if flag else str(exc)


@contextmanager
def terminating_signals_interrupt():
    """While inside: SIGTERM and SIGHUP raise ``Terminated`` (a KeyboardInterrupt) in the main
    thread, so the run cleans up as after Ctrl-C. Repeats of them are ignored until the clean-up is
    done (a service manager that sends SIGTERM twice must not cut it short; SIGKILL still stops it)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    numbers = [getattr(signal, name) for name in TERMINATING_SIGNALS if hasattr(signal, name)]

    def stop(number, frame):
        for other in numbers:
            signal.signal(other, signal.SIG_IGN)
        raise Terminated(number, signal.Signals(number).name)

    previous = {number: signal.signal(number, stop) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def stopped_status(exc: KeyboardInterrupt) -> int:
    """128 + the number of the signal that stopped the run (SIGINT for a plain Ctrl-C)."""
    return 128 + getattr(exc, "signal_number", signal.SIGINT)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with terminating_signals_interrupt():
            return args.func(args)
    except EngineError as exc:
        print(f"error: {error_message(exc, args.setting_flags)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        print(f"interrupted: stopped by {getattr(exc, 'name', 'SIGINT (Ctrl-C)')} (exit status {stopped_status(exc)})",
              file=sys.stderr)
        return stopped_status(exc)
