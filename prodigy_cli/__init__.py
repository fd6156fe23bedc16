"""Prodigy command-line interface: argument parsing and wiring only."""

VERSION = "0.1.0"
