"""Prodigy command-line interface: argument parsing and wiring only."""

from prodigy_core import __version__ as VERSION

__all__ = ["VERSION"]
