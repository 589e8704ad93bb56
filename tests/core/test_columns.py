"""dsa_cast.columns: batch columns read as plain values, with located errors."""

from __future__ import annotations

import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast.columns import column, decode_utf8, plain_value, sequence


class Scalar:
    """Duck-typed numpy scalar: ``item()`` and ``ndim == 0``."""

    ndim = 0

    def __init__(self, value: object) -> None:
        self.value = value

    def item(self) -> object:
        return self.value


class Array:
    """Duck-typed numpy array: ``tolist()``."""

    def __init__(self, values: object) -> None:
        self.values = values

    def tolist(self) -> object:
        return self.values


cells = st.one_of(st.none(), st.text(), st.integers(), st.floats(allow_nan=False))


@given(st.lists(cells, max_size=20))
def test_plain_cells_come_back_unchanged_and_bytes_decode(values: list[object]) -> None:
    assert column(values, len(values), "c") == values
    assert column(tuple(values), len(values), "c") == values
    assert column(Array(values), len(values), "c") == values
    wrapped = [Scalar(v) for v in values]
    assert column(wrapped, len(values), "c") == values
    texts = [v for v in values if isinstance(v, str)]
    assert column([t.encode() for t in texts], len(texts), "c") == texts


@given(st.lists(st.text(), min_size=1, max_size=5), st.integers(min_value=0, max_value=8))
def test_a_column_of_another_length_is_an_error_naming_both_lengths(values: list[str], n: int) -> None:
    if n == len(values):
        assert column(values, n, "answers") == values
    else:
        with pytest.raises(ValueError, match=rf"^answers has {len(values)} entries for {n} completions$"):
            column(values, n, "answers")


@pytest.mark.parametrize("bad", ["18", b"18", {"a": 1}, {1, 2}, 7, None, Array(3)])
def test_a_single_value_or_non_sequence_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match=r"^answers must be a sequence with one entry per completion"):
        sequence(bad, "answers")


def test_bytes_that_are_not_utf8_name_the_cell_and_byte_or_become_a_marker() -> None:
    with pytest.raises(
        ValueError, match=r"^answers\[1\]: bytes that are not UTF-8 text \(invalid byte 0xff at offset 2\)$"
    ):
        column([b"1", b"ab\xff"], 2, "answers")
    assert column([b"1", b"ab\xff"], 2, "answers", unreadable=lambda why: ("bad", why)) == [
        "1",
        ("bad", "bytes that are not UTF-8 text (invalid byte 0xff at offset 2)"),
    ]
    assert decode_utf8("é".encode()) == "é"
    assert plain_value(bytearray(b"x")) == "x"
    assert column(array.array("i", [1, 2]), 2, "ids") == [1, 2]
