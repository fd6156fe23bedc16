"""Effects and events round-trip through the codec with their stable tags."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy_core.effects import (
    EFFECT_TAGS,
    CommitChanges,
    ListCommits,
    LogEvent,
    Print,
    RunCommand,
    Sleep,
    SquashCommits,
)
from prodigy_core.events import (
    EVENT_TAGS,
    CancelRequested,
    ChangesCommitted,
    CommandFinished,
    CommitsListed,
    CommitsSquashed,
    GitFailed,
    GitHeadRead,
)
from prodigy_effects.codec import (
    CodecError,
    dump_effect,
    dump_event,
    dump_trace,
    load_effect,
    load_event,
    load_trace,
)


def test_every_effect_and_event_class_has_a_unique_tag_and_is_frozen() -> None:
    assert len(set(EFFECT_TAGS.values())) == len(EFFECT_TAGS)
    assert len(set(EVENT_TAGS.values())) == len(EVENT_TAGS)
    for cls in [*EFFECT_TAGS, *EVENT_TAGS]:
        assert attrs.has(cls)
        assert cls.__setattr__.__name__ == "_frozen_setattrs", cls.__name__
        assert all(a.kw_only for a in attrs.fields(cls)), cls.__name__


def test_tags_are_the_stored_names() -> None:
    data = dump_effect(RunCommand(command_id=3, argv=("sh", "-c", "echo"), cwd="/w",
                                  env=(("A", "1"),), timeout=2.5))
    assert data["type"] == "run_command"
    assert load_effect(data) == RunCommand(command_id=3, argv=("sh", "-c", "echo"), cwd="/w",
                                           env=(("A", "1"),), timeout=2.5)
    assert dump_event(CancelRequested(signal="SIGINT"))["type"] == "cancel_requested"


@settings(max_examples=60, deadline=None)
@given(cid=st.integers(0, 10**6), code=st.integers(-1, 255), out=st.text(), err=st.text(),
       timed=st.booleans(), dur=st.floats(0, 1e6, allow_nan=False))
def test_command_finished_round_trips(cid: int, code: int, out: str, err: str, timed: bool,
                                      dur: float) -> None:
    event = CommandFinished(command_id=cid, exit_code=code, stdout=out, stderr=err,
                            timed_out=timed, duration=dur)
    assert load_event(dump_event(event)) == event


def test_trace_documents_are_versioned() -> None:
    events = [GitHeadRead(command_id=1, sha="abc"), CancelRequested(signal="SIGTERM")]
    doc = dump_trace(events)
    assert doc["format_version"] == 1
    assert load_trace(doc) == events
    with pytest.raises(CodecError, match="newer"):
        load_trace({**doc, "format_version": 99})
    with pytest.raises(CodecError):
        load_event({"type": "no_such_event"})


def test_effects_with_pairs_round_trip() -> None:
    for effect in (LogEvent(event_type="x", fields=(("a", 1), ("b", "c"))), Sleep(command_id=1,
                   seconds=0.5), Print(text="hi", level="debug", stream="err")):
        assert load_effect(dump_effect(effect)) == effect


def test_git_effects_and_events_round_trip() -> None:
    for effect in (CommitChanges(command_id=1, cwd="/w", message="m", include=("a/**",),
                                 exclude=("*.tmp",), author="A <a@x>", sign=True),
                   ListCommits(command_id=2, cwd="/w", since=None),
                   SquashCommits(command_id=3, cwd="/w", since="s", message="m")):
        assert load_effect(dump_effect(effect)) == effect
    for event in (ChangesCommitted(command_id=1, sha=None, files=("a",)),
                  CommitsListed(command_id=2, head="h", commits=(("c", "m\n\nbody"),),
                                files_added=("x",), files_modified=("y",),
                                files_deleted=("z",)),
                  CommitsSquashed(command_id=3, sha="s", planned=True),
                  GitFailed(command_id=4, operation="squash_commits", message="no")):
        assert load_event(dump_event(event)) == event
    assert dump_effect(ListCommits(command_id=2, cwd="/w", since=None))["type"] == "list_commits"
