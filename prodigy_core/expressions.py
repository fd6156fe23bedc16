"""The expression languages of spec 04 in one import: ``when``, ``filter``, ``sort_by``, ``distinct``.

Theory of operation
-------------------
This module only re-exports.  Parsing lives in ``expr_parse`` (tokens, grammar, E1009
syntax errors), evaluation in ``expr_eval`` (truthiness, equality, ordering, functions,
E3004/W6002 evaluation errors), and item ordering in ``expr_sort`` (``sort_by``,
``distinct``).  All of it is pure: values in, values (or ``ExprError``) out.
"""

from __future__ import annotations

from prodigy_core.expr_eval import (
    MISSING,
    Missing,
    compare,
    equal,
    eval_filter,
    eval_when,
    item_field,
    truthy,
)
from prodigy_core.expr_parse import (
    And,
    Call,
    Compare,
    Const,
    Expr,
    ExprError,
    Field,
    In,
    Matches,
    Not,
    Or,
    Ref,
    parse_filter,
    parse_when,
    when_references,
)
from prodigy_core.expr_sort import SortKey, distinct_items, parse_sort_by, sort_items

__all__ = [
    "MISSING",
    "And",
    "Call",
    "Compare",
    "Const",
    "Expr",
    "ExprError",
    "Field",
    "In",
    "Matches",
    "Missing",
    "Not",
    "Or",
    "Ref",
    "SortKey",
    "compare",
    "distinct_items",
    "equal",
    "eval_filter",
    "eval_when",
    "item_field",
    "parse_filter",
    "parse_sort_by",
    "parse_when",
    "sort_items",
    "truthy",
    "when_references",
]
