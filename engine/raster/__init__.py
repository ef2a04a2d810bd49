"""Raster inference.

``settings`` (``engine.settings``) -> ``plan`` (tiling, channels, outputs) -> ``runners`` (run the model on
tiles) -> ``reassembly`` (results back in grid order) -> ``blending`` -> ``io.BlockWriter`` -> ``formats``
(the output files); ``pipeline`` ties them together, ``io`` reads the input, ``windows`` holds the tiling
arithmetic and ``spectral_metadata`` the band wavelengths in raster metadata.

``infer_raster`` and ``run_inference`` are imported lazily so that the torch-free modules stay usable
without torch.
"""

__all__ = ["infer_raster", "run_inference"]


def __getattr__(name):
    if name in __all__:
        from engine.raster import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
