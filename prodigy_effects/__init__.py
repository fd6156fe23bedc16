"""Prodigy effects: the trio interpreter and the environments it performs effects against."""
