"""dsa_cast.io: the one JSONL/JSON reader (every failure located as FILE:LINE: reason, bounded) and
the atomic writer (temporary name, fsync, rename; never over an input)."""

from __future__ import annotations

import io as stdio
import json
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa_cast import io
from dsa_cast.io import InputError, JsonLimits, OutputError

HOSTILE = {
    "invalid UTF-8": b'{"a": "\xff\xfe"}',
    "NUL": b'{"a": 1}\x00',
    "NUL in a string": b'{"a": "x\x00y"}',
    "5000-digit integer": b'{"a": ' + b"9" * 5000 + b"}",
    "100k-deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "900-deep arrays": b'{"a": ' + b"[" * 900 + b"]" * 900 + b"}",
    "lone surrogate": b'{"a": "\\udc80"}',
    "truncated": b'{"a": ',
    "not an object": b"[1, 2]",
    "bare string": b'"text"',
}


def lines_of(data: bytes, **kw) -> list[io.JsonLine]:
    return list(io.iter_jsonl(stdio.BytesIO(data), "F", **kw))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_hostile_line_is_a_located_error(name):
    got = lines_of(b'{"ok": 1}\n' + HOSTILE[name] + b'\n{"ok": 3}\n')
    assert [x.number for x in got] == [1, 2, 3]
    assert got[0].value == {"ok": 1} and got[2].value == {"ok": 3}  # the reader goes on
    bad = got[1]
    assert bad.value is None and isinstance(bad.error, InputError)
    assert str(bad.error).startswith("F:2: ") and bad.error.line == 2 and bad.error.path == "F"


def test_messages_say_what_is_wrong():
    reasons = {k: lines_of(b"\n" + v + b"\n")[0].error.reason for k, v in HOSTILE.items()}
    assert reasons["invalid UTF-8"] == "not UTF-8: invalid byte 0xff at column 8"
    assert reasons["NUL"].startswith("NUL byte at column 9")
    assert "4300 digits" in reasons["5000-digit integer"]
    assert reasons["100k-deep arrays"] == "invalid JSON: nested too deeply"
    assert reasons["900-deep arrays"] == "nested deeper than 128 levels"
    assert "lone surrogate" in reasons["lone surrogate"]
    assert reasons["not an object"] == "expected a JSON object, got list"
    assert reasons["truncated"].startswith("invalid JSON: Expecting value")


def test_bom_blank_lines_crlf_and_offsets():
    data = b'\xef\xbb\xbf{"a": 1}\r\n\n   \n{"b": 2}'
    got = lines_of(data)
    assert [(x.number, x.value) for x in got] == [(1, {"a": 1}), (4, {"b": 2})]
    # a byte-order mark starting a later line (files joined with cat) is skipped too
    assert lines_of(b'{"a": 1}\n\xef\xbb\xbf{"b": 2}\n')[1].value == {"b": 2}
    assert lines_of(b'{"a": \xef\xbb\xbf1}\n')[0].error.reason.startswith("invalid JSON")
    assert got[1].offset == data.index(b'{"b"') and got[1].offset + got[1].size == len(data)
    assert lines_of(b"[1]\n2\n", objects=False)[1].value == 2


def test_a_line_over_the_limit_is_skipped_in_bounded_pieces():
    limits = JsonLimits(max_line_bytes=100)
    data = b'{"a": "' + b"x" * 10_000 + b'"}\n{"b": 1}\n'
    got = lines_of(data, limits=limits)
    assert got[0].error.reason == "line longer than 100 bytes" and got[1].value == {"b": 1}
    with pytest.raises(ValueError, match="max_line_bytes"):
        JsonLimits(max_line_bytes=0)


class _FailingReader(stdio.BytesIO):
    def readline(self, size=-1):
        if self.tell() > 0:
            raise OSError(5, "Input/output error")
        return super().readline(size)


def test_a_read_error_names_the_file_and_line():
    with pytest.raises(InputError, match=r"^F:2: cannot read: Input/output error$"):
        list(io.iter_jsonl(_FailingReader(b'{"a": 1}\n{"b": 2}\n'), "F"))


def test_read_jsonl_check_skip_limit(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"x": 1}\n{"x": 2}\n\xff\n{"y": 3}\n{"x": 4}\n')
    with pytest.raises(InputError, match=r"d.jsonl:3: not UTF-8"):
        io.read_jsonl(p)
    got = io.read_jsonl(p, skip_bad=True, check=lambda r: None if "x" in r else "no x")
    assert [n for n, _ in got.records] == [1, 2, 5]
    assert [(b.line, b.reason) for b in got.bad_lines] == [(3, "not UTF-8: invalid byte 0xff at column 1"), (4, "no x")]
    assert len(io.read_jsonl(p, skip_bad=True, limit=1).records) == 1


def test_open_input_errors_name_the_path(tmp_path):
    with pytest.raises(InputError, match=r": no such file$"):
        io.read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match=r": is a directory, not a file$"):
        io.read_jsonl(tmp_path)
    # a file the kernel cannot read (EIO, as an unreadable disk would): named with its line
    with pytest.raises(InputError, match=r"^/proc/self/mem:1: cannot read: Input/output error$"):
        io.read_jsonl("/proc/self/mem")


def test_load_json_locates_syntax_errors_and_caps_size(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(InputError, match=r"c.json:4: invalid JSON: Expecting value"):
        io.load_json(p)
    p.write_text("[1]")
    with pytest.raises(InputError, match=r"c.json: expected a JSON object, got list"):
        io.load_json(p)
    assert io.load_json(p, objects=False) == [1]
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert io.load_json(p) == {"a": 1}
    p.write_text('{"a": "' + "x" * 200 + '"}')
    with pytest.raises(InputError, match=r"larger than 100 bytes"):
        io.load_json(p, limits=JsonLimits(max_file_bytes=100))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(st.binary(max_size=40), st.sampled_from(list(HOSTILE.values())), st.just(b'{"ok": true}')),
        max_size=12,
    )
)
def test_the_reader_never_raises_and_locates_every_bad_line(chunks):
    data = b"\n".join(c.replace(b"\n", b" ") for c in chunks) + b"\n"
    for line in lines_of(data):
        if line.error is None:
            assert isinstance(line.value, dict)
            json.dumps(line.value)  # whatever it accepted, a strict writer can write back
        else:
            assert str(line.error).startswith(f"F:{line.number}: ")


# -- atomic outputs ---------------------------------------------------------------------------


def test_atomic_output_replaces_only_when_done(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old")
    p.chmod(0o640)
    with pytest.raises(RuntimeError), io.atomic_output(p) as fh:
        fh.write("half")
        raise RuntimeError("crash")
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"]
    io.atomic_write_text(p, "new\n")
    assert p.read_text() == "new\n" and stat.S_IMODE(p.stat().st_mode) == 0o640
    io.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["b.bin", "out.txt"]  # no temporary left


def test_atomic_output_refuses_to_replace_an_input(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": 1}\n')
    link, hard = tmp_path / "link.jsonl", tmp_path / "hard.jsonl"
    link.symlink_to(src)
    os.link(src, hard)
    for out in (src, link, hard, tmp_path / "." / "in.jsonl"):
        with pytest.raises(OutputError, match="it is the input"):
            io.atomic_write_text(out, "x", inputs=[str(src)])
    assert src.read_text() == '{"a": 1}\n'
    io.atomic_write_text(tmp_path / "other.jsonl", "x", inputs=[str(src), "-"])


def test_atomic_output_writes_through_a_link_and_refuses_a_directory(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("a")
    (tmp_path / "l.txt").symlink_to(target)
    io.atomic_write_text(tmp_path / "l.txt", "b")
    assert (tmp_path / "l.txt").is_symlink() and target.read_text() == "b"
    with pytest.raises(OutputError, match="is a directory"):
        io.atomic_write_text(tmp_path, "x")


def test_atomic_write_json_is_strict_json(tmp_path):
    io.atomic_write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    with pytest.raises(ValueError):
        io.atomic_write_json(tmp_path / "b.json", {"x": float("nan")})
    assert not (tmp_path / "b.json").exists()


class _Endless:
    """A stream with no newline, ever (like /dev/zero)."""

    def readline(self, size=-1):
        return b"0" * (size if size > 0 else 1 << 20)


def test_an_endless_line_is_reported_without_reading_it_to_the_end():
    first = next(io.iter_jsonl(_Endless(), "/dev/zero", limits=JsonLimits(max_line_bytes=1000)))
    assert str(first.error) == "/dev/zero:1: line longer than 1000 bytes"
    data = b'{"a": "' + b"x" * 5000 + b'"}\n{"b": 1}\n'
    got = lines_of(data, limits=JsonLimits(max_line_bytes=100))
    assert got[1].offset == data.index(b'{"b"') and got[1].value == {"b": 1}
