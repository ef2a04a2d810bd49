"""Raster inference: tiling (``windows``), GeoTIFF input/output (``io``), the pipeline (``pipeline``).

``infer_raster`` is imported lazily so that ``engine.raster.windows`` and ``engine.raster.io`` stay
usable without torch.
"""

__all__ = ["infer_raster"]


def __getattr__(name):
    if name == "infer_raster":
        from engine.raster.pipeline import infer_raster

        return infer_raster
    raise AttributeError(name)
