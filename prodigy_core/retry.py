"""Retry policy arithmetic (spec 10 §2): which failures retry and how long to wait.

Pure functions.  Jitter is drawn from a deterministic hash of the run's seed, the step
path (or the item id, for the item retries of a MapReduce job, spec 05 §10.4) and the
attempt, so a replayed run waits exactly as the recorded one did.  The delay arithmetic
takes a step's ``retry:`` (``RetrySpec``) or a job's ``retry_config`` (``ItemRetry``):
both have the same backoff fields; ``ItemRetry`` has no ``jitter_factor`` and uses the
default 0.3.
"""

from __future__ import annotations

import hashlib
import re

from prodigy_core.model import ItemRetry, RetryMatcher, RetrySpec

DelaySpec = RetrySpec | ItemRetry
DEFAULT_JITTER_FACTOR = 0.3

_TEXT_MATCHERS = {
    "network": r"network|connection|refused|unreachable|reset by peer",
    "timeout": r"timed out|timeout",
    "server_error": r"\b50[0234]\b|server error|overloaded",
    "rate_limit": r"rate limit|\b429\b|too many requests",
}


def matches(matcher: RetryMatcher, *, error_class: str, exit_code: int, text: str) -> bool:
    kind = matcher.kind
    if kind == "pattern":
        return matcher.pattern is not None and re.search(matcher.pattern, text) is not None
    if kind == "exit_code":
        return exit_code in matcher.exit_codes
    if kind in _TEXT_MATCHERS:
        if error_class == kind:
            return True
        return re.search(_TEXT_MATCHERS[kind], text, re.IGNORECASE) is not None
    return error_class == kind


def should_retry(spec: RetrySpec, *, error_class: str, exit_code: int, text: str) -> bool:
    if not spec.retry_on:
        return True
    return any(
        matches(m, error_class=error_class, exit_code=exit_code, text=text) for m in spec.retry_on
    )


def _fib(k: int) -> int:
    a, b = 1, 1
    for _ in range(k - 1):
        a, b = b, a + b
    return a


def base_delay(spec: DelaySpec, k: int) -> float:
    """Delay before retry ``k`` (k = 1 before the second execution), capped."""
    backoff = spec.backoff
    initial = backoff.initial if backoff.initial is not None else spec.initial_delay
    if backoff.kind == "fixed":
        delay = initial
    elif backoff.kind == "linear":
        increment = backoff.increment if backoff.increment is not None else spec.initial_delay
        delay = initial + increment * (k - 1)
    elif backoff.kind == "exponential":
        delay = initial * (backoff.base ** (k - 1))
    elif backoff.kind == "fibonacci":
        delay = initial * _fib(k)
    else:
        delay = backoff.delays[k - 1] if k - 1 < len(backoff.delays) else spec.max_delay
    return max(0.0, min(delay, spec.max_delay))


def unit_random(seed: int, key: str) -> float:
    """A deterministic number in [0, 1) derived from ``seed`` and ``key``."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def delay_for(spec: DelaySpec, k: int, *, seed: int, key: str) -> float:
    """Delay before retry ``k`` with jitter (spec 10 §2.3) drawn from ``seed`` and ``key``."""
    delay = base_delay(spec, k)
    if spec.jitter:
        factor = spec.jitter_factor if isinstance(spec, RetrySpec) else DEFAULT_JITTER_FACTOR
        u = (unit_random(seed, f"{key}:{k}") - 0.5) * factor
        delay = max(0.0, delay * (1 + u))
    return delay


def format_delay(seconds: float) -> str:
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.2f}s"
