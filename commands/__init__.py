"""CLI command groups; each module exposes ``register(app)``. See ``flexsnn/cli.py``."""
