"""``ItemStates``: the item statuses of a job and their counts, kept in step."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from prodigy_core.job_state import ItemStates, ItemStatus

STATUSES: tuple[ItemStatus, ...] = ("pending", "running", "merging", "succeeded", "failed")


@given(start=st.dictionaries(st.integers(0, 20), st.sampled_from(STATUSES)),
       changes=st.lists(st.tuples(st.integers(0, 25), st.sampled_from(STATUSES))))
def test_counts_follow_every_change(start: dict[int, ItemStatus],
                                    changes: list[tuple[int, ItemStatus]]) -> None:
    states = ItemStates.of(start)
    expected = dict(start)
    for index, status in changes:
        before = states
        states = states.set(index, status)
        expected[index] = status
        assert before.get(index) != status or states is before  # no change: the same one
    assert dict(states) == expected and len(states) == len(expected)
    for status in STATUSES:
        assert states.count(status) == list(expected.values()).count(status)
    assert states == ItemStates.of(expected)
