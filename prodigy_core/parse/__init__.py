"""Validation of workflow data into the model (spec 01, 02).  Pure: no I/O.

``parse_workflow(data, ...)`` is the entry point; the loader in
``prodigy_effects.loader`` produces its inputs.
"""

from prodigy_core.parse.durations import parse_duration
from prodigy_core.parse.shape import ParseResult, parse_workflow

__all__ = ["ParseResult", "parse_duration", "parse_workflow"]
