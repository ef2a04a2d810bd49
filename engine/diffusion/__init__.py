"""Noise schedule, training loss and samplers. Networks come in as arguments."""
