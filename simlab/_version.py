"""The package version, at the bottom of the package so that any layer may name it."""

__version__ = "0.1.0"
