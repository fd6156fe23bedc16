"""The JSON value type shared by the core (variables, checkpoints, journal fields)."""

from __future__ import annotations

from typing import TypeAlias

JSON: TypeAlias = "None | bool | int | float | str | list[JSON] | dict[str, JSON]"
