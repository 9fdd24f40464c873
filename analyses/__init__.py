"""Analyses: one module per experiment, each a Config dataclass and run(cfg) -> Report."""
