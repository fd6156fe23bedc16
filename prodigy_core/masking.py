"""Secret masking (spec 11 §9): which values are secret, and replacing them in text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from prodigy_core.model import EnvStatic, OnFailure, Step, Workflow

REDACTED = "***REDACTED***"
SENSITIVE_NAME = re.compile(
    r"password|passwd|pwd|token|api[_-]?key|secret|auth|bearer|private[_-]?key|"
    r"ssh[_-]?key|access[_-]?key|client[_-]?secret",
    re.IGNORECASE,
)


def is_sensitive(name: str) -> bool:
    return SENSITIVE_NAME.search(name) is not None


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value (raw and JSON-escaped) by ``***REDACTED***``.

    Values shorter than 4 characters are left alone (warning W1013 at start).
    """
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) < 4:
            continue
        text = text.replace(secret, REDACTED)
        escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
        if escaped != secret:
            text = text.replace(escaped, REDACTED)
        ascii_escaped = json.dumps(secret)[1:-1]
        if ascii_escaped not in (secret, escaped):
            text = text.replace(ascii_escaped, REDACTED)
    return text


def _steps(steps: Iterable[Step]) -> Iterable[Step]:
    for step in steps:
        yield step
        if step.on_success is not None:
            yield from _steps((step.on_success,))
        if isinstance(step.on_failure, OnFailure):
            yield from _steps(step.on_failure.commands)
        yield from _steps(handler for _, handler in step.on_exit_code)


def step_env_secrets(workflow: Workflow) -> tuple[str, ...]:
    """Literal values of step ``env`` entries whose names look sensitive (spec 11 §9.1)."""
    found: list[str] = []
    phases: list[Step] = list(workflow.steps)
    for phase in (workflow.setup, workflow.reduce, workflow.merge):
        if phase is not None:
            phases.extend(phase.steps)
    if workflow.map is not None:
        phases.extend(workflow.map.agent_template)
    for step in _steps(phases):
        for name, value in step.env:
            if is_sensitive(name) and value:
                found.append(value)
    return tuple(dict.fromkeys(found))


def known_secrets(workflow: Workflow, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secret values known before the environment is resolved: ``secrets`` read from
    Prodigy's own environment, literal ``{value: …, secret: true}`` values and sensitive
    step ``env`` literals (for problems printed before the run's masker exists)."""
    found: list[str] = []
    for _name, source in workflow.secrets:
        if source.provider == "env" and environ.get(source.key):
            found.append(environ[source.key])
    profiles = [value for p in workflow.profiles for _, value in p.values]
    for value in (*(v for _, v in workflow.env), *profiles):
        if isinstance(value, EnvStatic) and value.secret and value.value:
            found.append(value.value)
    found.extend(step_env_secrets(workflow))
    return tuple(dict.fromkeys(found))


_CREDENTIAL = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{8,}|glpat-[A-Za-z0-9_\-]{8,}|AKIA[A-Z0-9]{16}|"
    r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)\b|\b(?:Basic|Bearer) [A-Za-z0-9+/=._\-]{8,}"
)


def mask_credentials(text: str) -> str:
    """Mask values that look like credentials (spec 11 §9.3), for displayed environments."""
    return _CREDENTIAL.sub(REDACTED, text)


def display_secrets(env: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """Values of sensitive-named workflow env entries, masked where env is displayed."""
    return tuple(value for name, value in env if is_sensitive(name) and len(value) >= 4)
