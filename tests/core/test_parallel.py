"""``ordered_map``: results in input order, bounded read-ahead, errors at their place."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsa_cast.parallel import available_cores, ordered_map


class Counted:
    """An input iterator that records how many chunks were pulled."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.pulled = 0

    def __iter__(self):
        for c in self.chunks:
            self.pulled += 1
            yield c


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_results_come_back_in_input_order(jobs):
    chunks = [list(range(i, i + 50 + (i * 37) % 400)) for i in range(40)]
    assert list(ordered_map(sum, chunks, jobs=jobs, window=2 * jobs)) == [sum(c) for c in chunks]


# Each example may start a pool of worker processes (about a second each): a few suffice.
@settings(max_examples=8)
@given(st.lists(st.lists(st.integers(-(10**6), 10**6), max_size=20), max_size=12), st.integers(1, 3))
def test_property_same_as_map(chunks, jobs):
    assert list(ordered_map(sum, chunks, jobs=jobs, window=jobs)) == list(map(sum, chunks))


def test_read_ahead_is_bounded():
    src = Counted([[i] for i in range(30)])
    window = 3
    for k, _ in enumerate(ordered_map(sum, src, jobs=2, window=window), 1):
        assert src.pulled <= k + window  # never more than `window` chunks handed out and not yet consumed
    assert src.pulled == 30


def test_an_error_is_raised_at_its_place_and_stops_the_rest():
    got = []
    with pytest.raises(ValueError, match="invalid literal"):
        for value in ordered_map(int, ["1", "2", "x", "4", "5"], jobs=2, window=2):
            got.append(value)
    assert got == [1, 2]


def test_closing_early_stops_reading():
    src = Counted([[i] for i in range(1000)])
    it = ordered_map(sum, src, jobs=2, window=4)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert src.pulled < 20


def test_single_chunk_and_one_job_run_in_process():
    seen = []

    def local(chunk):  # not picklable: proves no worker process is involved
        seen.append(chunk)
        return len(chunk)

    assert list(ordered_map(local, [[1, 2]], jobs=4, window=8)) == [2]
    assert list(ordered_map(local, [[1], [2, 3]], jobs=1, window=1)) == [1, 2]
    assert list(ordered_map(local, [], jobs=4, window=8)) == []
    assert seen == [[1, 2], [1], [2, 3]]


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="jobs"):
        list(ordered_map(sum, [[1]], jobs=0, window=1))
    assert available_cores() >= 1
