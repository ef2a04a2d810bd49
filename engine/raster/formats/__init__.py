"""Output formats of raster inference, chosen by the output file's extension.

Adding a format: one module in this folder with a class that has ``name``, ``extensions``,
``create(path, spec)`` and ``companions(path)`` (``engine.raster.formats.base.OutputFormat``), and
one line in ``FORMATS``. The extension check, the atomic partial-file handling
(``engine.raster.formats.atomic``) and the block assembly (``engine.raster.io.BlockWriter``) then
serve it as they serve GeoTIFF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

from engine.errors import InputError
from engine.raster.formats.base import OutputFile, OutputFormat, OutputSpec
from engine.raster.formats.geotiff import GeoTIFF

# THE registry; the first format is the one suggested for a file name it does not recognise.
FORMATS: Tuple[OutputFormat, ...] = (
    GeoTIFF(),
)

__all__ = ["FORMATS", "OutputFile", "OutputFormat", "OutputSpec", "format_for", "supported_extensions"]


def _by_extension() -> Dict[str, OutputFormat]:
    return {extension: output_format for output_format in FORMATS for extension in output_format.extensions}


def supported_extensions() -> Tuple[str, ...]:
    return tuple(_by_extension())


def format_for(path, parameter: str = "output") -> OutputFormat:
    """The format that writes ``path``, by its extension; ``InputError(parameter=parameter)`` naming
    the supported extensions otherwise."""
    path = Path(path)
    output_format = _by_extension().get(path.suffix.lower())
    if output_format is not None:
        return output_format
    found = f"extension '{path.suffix}'" if path.suffix else "no extension"
    listed = "; ".join(f"{f.name} ({', '.join(f.extensions)})" for f in FORMATS)
    suggestion = path.with_name(path.stem + FORMATS[0].extensions[0])
    raise InputError(f"output '{path}' has {found}, which no output format writes: the supported formats are "
                     f"{listed}; name the file e.g. '{suggestion}'", parameter=parameter)
