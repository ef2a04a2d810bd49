"""Measurement commands for SCDM (development only; not shipped in the plugin zip)."""
