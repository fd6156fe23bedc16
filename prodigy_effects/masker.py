"""The live masker of a run: secret values replaced by ``***REDACTED***`` (spec 11 §9).

One ``Masker`` is created per run and handed to every writer that shows or stores text:
the console, the journal, the checkpoint and session store, the Claude transcripts and
the MapReduce job files.  It starts with the secrets known at start
(``RunContext.secret_values``) and learns more while the run goes on: the interpreter
performs ``RegisterSecret`` by calling ``add``, so that every writer masks the new value
from that moment on.  It is the ``SecretRegistry`` of ``prodigy_effects.env.Env``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prodigy_core.masking import mask, mask_credentials


class Masker:
    """``masker(text)`` masks every known secret; ``masker.add(value)`` knows one more.

    ``credentials`` also masks values that look like credentials (spec 11 §9.3), for
    places that display an environment (the dry-run plan).
    """

    def __init__(self, secrets: Iterable[str] = (), *, credentials: bool = False) -> None:
        self._values: list[str] = list(dict.fromkeys(secrets))
        self._credentials = credentials

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(self._values)

    def add(self, value: str) -> None:
        if value and value not in self._values:
            self._values.append(value)

    def __call__(self, text: str) -> str:
        text = mask(text, self._values)
        return mask_credentials(text) if self._credentials else text
