"""The trainers write their JSONL and parquet files through dsa_cast.io.atomic_output (issue 11):
a failure part way leaves the previous file as it was and no temporary file behind."""

from __future__ import annotations

import pytest

from dsa_cast_train import runs, verl_data


def _rows_then_failure(n: int):
    for i in range(n):
        yield {"i": i, "text": "é" * 10}
    raise RuntimeError("disk full")


def test_write_jsonl_writes_every_row(tmp_path):
    path = tmp_path / "items.jsonl"
    runs.write_jsonl(path, [{"a": 1}, {"b": "é"}], ensure_ascii=False)
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"b": "é"}\n'
    runs.write_jsonl(path, [{"b": "é"}])
    assert path.read_text(encoding="utf-8") == '{"b": "\\u00e9"}\n'


@pytest.mark.parametrize("failure", ["generator", "unencodable"])
def test_write_jsonl_failure_keeps_the_previous_file(tmp_path, failure):
    path = tmp_path / "items.jsonl"
    runs.write_jsonl(path, [{"old": True}])
    before = path.read_bytes()
    rows = _rows_then_failure(1000) if failure == "generator" else [{"ok": 1}, {"bad": object()}]
    with pytest.raises((RuntimeError, TypeError)):
        runs.write_jsonl(path, rows)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl"]  # no temporary file left


def test_write_parquet_round_trip_and_failure(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "train.parquet"
    rows = [verl_data.verl_row("What is 2+3?", "#### 5", "train", 0)]
    verl_data.write_parquet(rows, path)
    assert pq.read_table(path).to_pylist()[0]["extra_info"]["index"] == 0
    before = path.read_bytes()

    def half_then_crash(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        verl_data.write_parquet(rows * 3, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]
