"""SCDM engine: spectral-cascaded diffusion for RGB to hyperspectral reconstruction.

This package never imports qgis or PyQt; the QGIS adapter lives in ``scdm_plugin``.
"""

__version__ = "0.1.0"
