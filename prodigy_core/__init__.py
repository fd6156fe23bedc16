"""Prodigy core: the pure model, parsers and state machines. No I/O."""
