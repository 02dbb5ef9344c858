"""Sweeps: ablations of one axis and methods across a suite, run over cores or a Ray cluster,
summarized with rliable."""
