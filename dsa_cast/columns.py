"""Batch columns as plain Python values: the one reading shared by every reward entry point.

RL frameworks hand rewards their batch columns as lists, tuples, numpy arrays (of ``str_``,
``bytes_`` or ``object`` cells) or 0-d arrays. :func:`plain_value` turns one cell into a plain
Python value without importing numpy (duck typing on ``item``/``ndim``), and :func:`column`
reads a whole column, checking its length against the batch and naming the bad cell.

>>> column([b"18", "4.5", None], 3, "answers")
['18', '4.5', None]
>>> column("18", 1, "answers")
Traceback (most recent call last):
    ...
TypeError: answers must be a sequence with one entry per completion (list, tuple or array), got one str
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set

__all__ = ["plain_value", "decode_utf8", "sequence", "column"]


def decode_utf8(raw: bytes) -> str:
    """``raw`` as UTF-8 text; otherwise a ValueError naming the first bad byte and its offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"bytes that are not UTF-8 text (invalid byte 0x{raw[err.start]:02x} at offset {err.start})"
        ) from None


def plain_value(value: object) -> object:
    """A numpy scalar, 0-d array or bytes cell as a plain Python value (others unchanged).

    Bytes are decoded as UTF-8 (:func:`decode_utf8`: a ValueError when they are not text).

    >>> plain_value(b"7"), plain_value(7), plain_value(None)
    ('7', 7, None)
    """
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return decode_utf8(bytes(value))
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return plain_value(item())
    return value


def sequence(values: object, label: str) -> list[object]:
    """The entries of a list, tuple or numpy array column, as a list.

    One str, bytes, mapping or set is a TypeError: iterating it would grade its characters or
    keys. numpy arrays are read with one ``tolist()`` call (native Python values).
    """
    tolist = getattr(values, "tolist", None)
    entries = tolist() if callable(tolist) else values  # a 0-d array's tolist() is a scalar
    if isinstance(entries, (str, bytes, bytearray, Mapping, Set)) or not isinstance(entries, Iterable):
        raise TypeError(
            f"{label} must be a sequence with one entry per completion (list, tuple or array), "
            f"got one {type(values).__name__}"
        )
    return list(entries)


def column(values: object, n: int, label: str, *, unreadable: Callable[[str], object] | None = None) -> list[object]:
    """``n`` plain values (:func:`plain_value`) from a column of a batch of ``n`` completions.

    Args:
        values: the column (list, tuple or numpy array).
        n: the number of completions; a column of another length is a ValueError.
        label: how errors name the column (``"grade_batch(): answers"``).
        unreadable: when given, a cell that is not UTF-8 becomes ``unreadable(reason)`` instead
            of a ValueError (an adapter then decides per item, with its ``on_error``).

    Returns:
        One plain value per completion, in order.
    """
    out: list[object] = []
    for i, v in enumerate(sequence(values, label)):
        try:
            out.append(plain_value(v))
        except ValueError as err:
            if unreadable is None:
                raise ValueError(f"{label}[{i}]: {err}") from None
            out.append(unreadable(str(err)))
    if len(out) != n:
        raise ValueError(f"{label} has {len(out)} entries for {n} completions")
    return out
