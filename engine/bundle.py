"""Model bundles: a folder with ``config.json`` (a ``BundleConfig``) and ``weights.safetensors``.

Loading parses JSON and safetensors only, so a bundle can never execute code; a pickle, a truncated
file or weights that do not fit the config are refused with a message saying what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.cascade import Cascade
from engine.config import BundleConfig
from engine.errors import BundleError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_TAG = "scdm-bundle"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def default_bundle_path() -> Path:
    """The model shipped with the plugin."""
    return Path(__file__).resolve().parent.parent / "resources" / "models" / "scdm-default"


def save_bundle(cascade: Cascade, folder: Union[str, Path]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for prefix, network in cascade.networks().items():
        for key, value in network.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous()
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": FORMAT_TAG, "name": cascade.config.name})
    (folder / CONFIG_NAME).write_text(json.dumps(cascade.config.to_dict(), indent=2) + "\n")
    return folder


def read_config(folder: Union[str, Path]) -> BundleConfig:
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() in PICKLE_SUFFIXES:
        raise BundleError(f"{folder} looks like a pickled checkpoint; bundles never load pickles. "
                          f"Pass a bundle folder holding {CONFIG_NAME} and {WEIGHTS_NAME}.")
    if folder.is_file() and folder.name in (CONFIG_NAME, WEIGHTS_NAME):
        folder = folder.parent
    if not folder.is_dir():
        raise BundleError(f"model bundle {folder} does not exist: pass a folder holding {CONFIG_NAME} and "
                          f"{WEIGHTS_NAME} (the default model is {default_bundle_path()})")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise BundleError(f"{folder} is not a model bundle: {CONFIG_NAME} is missing")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is damaged, copy it again") from exc
    try:
        return BundleConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path} is not an SCDM bundle config: {exc}") from exc


def load_bundle(folder: Union[str, Path], device: str = "cpu") -> Cascade:
    folder = Path(folder)
    config = read_config(folder)
    if folder.is_file():
        folder = folder.parent
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"{folder} has no {WEIGHTS_NAME}; the bundle is incomplete, copy it again")
    try:
        with open(weights, "rb") as handle:
            head = handle.read(2)
        if head[:1] == b"\x80" or head == b"PK":
            raise BundleError(f"{weights} is a pickle/zip checkpoint, not safetensors; bundles never load "
                              "pickles. Convert it with safetensors.torch.save_file.")
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{weights} cannot be read as safetensors ({exc}); the file is truncated or "
                          "foreign, copy the bundle again") from exc
    cascade = Cascade(config, device="cpu")
    networks = cascade.networks()
    foreign = sorted({key.split(".", 1)[0] for key in tensors} - set(networks))
    if foreign:
        raise BundleError(f"{weights} holds weights for {', '.join(foreign)}, which {CONFIG_NAME} does not describe; "
                          "the weights and config come from different models")
    for prefix, network in networks.items():
        state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else "mismatch"
            raise BundleError(f"{weights} does not match {CONFIG_NAME} for {prefix} ({first_line}); "
                              "the weights and config come from different models") from exc
    return cascade.to(device)
