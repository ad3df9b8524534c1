"""The ``simlab`` command: a thin shell over the Python API (all argparse code lives here)."""

from simlab.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
