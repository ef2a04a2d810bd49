"""SCDM spectral super-resolution: QGIS plugin entry point (the folder must be named ``scdm``)."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Called by QGIS (with iface=None under qgis_process) to create the plugin."""
    from .scdm_plugin.plugin import ScdmPlugin

    return ScdmPlugin(iface)
