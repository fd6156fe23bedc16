"""Prodigy core: the pure model, parsers and state machines. No I/O."""

# the one version string in the code (pyproject.toml's ``version`` must match it; a test
# says so): reading the installed distribution's metadata instead costs ~20 ms per start
__version__ = "0.1.0"
