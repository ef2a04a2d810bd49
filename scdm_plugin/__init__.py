"""QGIS adapter of the SCDM engine: the plugin class, the Processing provider and its algorithms.

Nothing here imports torch or the engine at import time, so the plugin loads in a QGIS whose Python
lacks them; the algorithms then fail with the command that installs them.
"""
