"""Processing algorithms of the ``scdm`` provider."""
