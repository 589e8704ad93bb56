"""Tests of dsa_cast_train.data: GSM8K loading and conversion, competition loaders, chat template,
tokenisation with an exact loss mask (checked token by token) and the grain pipelines."""

from __future__ import annotations

import io
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsa_cast.claims import check_claims
from dsa_cast.parse import parse
from dsa_cast.score import grade
from dsa_cast_train import data as D
from dsa_cast_train.data.gsm8k_solution import has_operator

GSM8K_DIR = D.EMBEDDED_GSM8K_DIR
ANNOTATION = re.compile(r"<<([^<>]*)>>")


# ------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def train_records() -> list[dict]:
    return D.load_gsm8k(GSM8K_DIR, "train")


@pytest.fixture(scope="module")
def test_records() -> list[dict]:
    return D.load_gsm8k(GSM8K_DIR, "test")


@pytest.fixture(scope="module")
def converted(train_records) -> list[D.Example]:
    return [D.gsm8k_to_dsa(r) for r in train_records]


@pytest.fixture(scope="module")
def sp(train_records):
    """A SentencePiece model trained here with Gemma's id convention and chat-turn symbols."""
    import sentencepiece as spm

    lines = [r["question"] for r in train_records[:300]] + [r["answer"] for r in train_records[:300]]
    lines += [D.SYSTEM_PROMPT]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=600, hard_vocab_limit=False,
        model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        user_defined_symbols=[D.START_OF_TURN, D.END_OF_TURN], normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, byte_fallback=True, minloglevel=2,
    )
    proc = spm.SentencePieceProcessor()
    proc.LoadFromSerializedProto(buf.getvalue())
    assert (proc.pad_id(), proc.eos_id(), proc.bos_id(), proc.unk_id()) == (0, 1, 2, 3)
    return proc


def _sections(response: str) -> dict[str, str]:
    c = parse(response)
    return {s.name: s.body for s in c.sections}


# ------------------------------------------------------------------------------------------------
# GSM8K loading


def test_load_gsm8k_counts_and_ids(train_records, test_records):
    assert len(train_records) == 7473 and len(test_records) == 1319
    assert train_records[0]["id"] == "gsm8k-train-1"
    assert all(set(r) == {"question", "answer", "id"} for r in train_records[:50])
    assert D.load_gsm8k(GSM8K_DIR / "test.jsonl.gz", limit=3) == test_records[:3]


# The digests the asset README publishes: of each shipped file, and of the upstream JSONL inside it.
EMBEDDED = {"train": ("047ae96fb3025b18b8cfa89c4f9e9c7cd5120906864d58c3f93c91c495da6449",
                      "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
            "test": ("1affc2f095eb08c525d0504bce7f620740776bcd7d67a12c71901700cb7ab73a",
                     "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14")}


def test_embedded_gsm8k_is_the_published_upstream_copy_with_its_licence():
    import gzip
    import hashlib

    readme = (GSM8K_DIR / "README.md").read_text(encoding="utf-8")
    for split, (packed, upstream) in EMBEDDED.items():
        path = GSM8K_DIR / f"{split}.jsonl.gz"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == packed
        assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == upstream
        assert packed in readme and upstream in readme
    assert "MIT License" in (GSM8K_DIR / "LICENSE").read_text(encoding="utf-8")
    assert "Copyright (c) 2021 OpenAI" in (GSM8K_DIR / "LICENSE").read_text(encoding="utf-8")


def test_no_path_reads_the_embedded_copy_unless_the_environment_names_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DSA_CAST_GSM8K", raising=False)
    assert D.default_gsm8k_dir() == GSM8K_DIR
    assert D.load_gsm8k(None, "test", limit=2) == D.load_gsm8k(GSM8K_DIR, "test", limit=2)
    src = D.describe_gsm8k_source(None)
    assert src.kind == "embedded" and src.location == str(GSM8K_DIR)
    assert {k: v for k, v in src.sha256.items()} == {s: d[0] for s, d in EMBEDDED.items()}
    assert "embedded GSM8K" in src.describe() and EMBEDDED["test"][0] in src.describe()
    # $DSA_CAST_GSM8K wins over the embedded copy; a plain .jsonl keeps the same record ids
    record = {"question": "Q?", "answer": "1+1 = <<1+1=2>>2\n#### 2"}
    (tmp_path / "test.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    monkeypatch.setenv("DSA_CAST_GSM8K", str(tmp_path))
    assert D.load_gsm8k(None, "test") == [{**record, "id": "gsm8k-test-1"}]
    local = D.describe_gsm8k_source(None, ("test",))
    assert local.kind == "local" and local.location == str(tmp_path)
    assert local.sha256 == {"test": hashlib_hex(tmp_path / "test.jsonl")}
    assert D.describe_gsm8k_source(None, source="hf").as_dict() == {
        "kind": "hf", "location": "openai/gsm8k/main", "sha256": {}}


def hashlib_hex(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_gsm8k_missing_path_names_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.jsonl.*Pass the directory"):
        D.load_gsm8k(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        D.load_gsm8k(GSM8K_DIR, "validation")


def test_load_gsm8k_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "train.jsonl"
    good = json.dumps({"question": "q?", "answer": "1+1 = <<1+1=2>>2\n#### 2"})
    p.write_text(f"{good}\n\n{{not json\n{json.dumps({'question': 'q'})}\n{good}\n", encoding="utf-8")
    with pytest.raises(D.DataFormatError, match=rf"{re.escape(str(p))}:3: invalid JSON") as err:
        D.load_gsm8k(tmp_path)
    assert err.value.line == 3 and err.value.path == str(p)
    recs = D.load_gsm8k(tmp_path, skip_bad=True)
    assert [r["id"] for r in recs] == ["gsm8k-train-1", "gsm8k-train-5"]
    read = D.read_jsonl(p, skip_bad=True, check=lambda r: None if "answer" in r else "no answer")
    assert [(b.line, b.reason) for b in read.bad_lines] == [(3, read.bad_lines[0].reason), (4, "no answer")]


def test_load_gsm8k_hf_and_tfds_offline_errors_say_which_path(monkeypatch):
    fake = types.ModuleType("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    fake.load_dataset = offline
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(D.GSM8KUnavailable, match=r"HuggingFace datasets.*pass its directory: load_gsm8k\("):
        D.load_gsm8k(source="hf", split="test")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(D.GSM8KUnavailable, match="not installed"):
        D.load_gsm8k(source="hf")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(D.GSM8KUnavailable, match=r"TensorFlow Datasets.*test\.jsonl"):
        D.load_gsm8k(source="tfds", split="test")


def test_load_gsm8k_hf_rows_are_checked(monkeypatch):
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda *a, **k: [
        {"question": "Q1?", "answer": "2+2 = <<2+2=4>>4\n#### 4"},
        {"question": "Q2?", "answer": "no final line"},
    ]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(D.DataFormatError, match=r"hf:gsm8k/train:2: .*####"):
        D.load_gsm8k(source="hf")
    assert [r["id"] for r in D.load_gsm8k(source="hf", skip_bad=True)] == ["gsm8k-train-1"]


# ------------------------------------------------------------------------------------------------
# GSM8K -> DSA over real records


def test_converted_records_parse_exactly(converted):
    for ex in converted:
        c = parse(ex.response)
        assert c.issues == () and c.exact_format, (ex.id, c.issues)
        assert [s.name for s in c.sections] == ["Plan", "Reasoning", "Evidence", "Sanity_check"]


def test_answer_block_is_the_normalised_final_value(train_records, converted):
    for rec, ex in zip(train_records, converted):
        final = rec["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        c = parse(ex.response)
        assert c.answer.body.strip() == final == ex.answer
        assert re.fullmatch(r"-?\d+(\.\d+)?", ex.answer)


def test_every_annotation_becomes_a_verified_calc_line_in_order(train_records, converted):
    n_lines = n_restating = n_other = 0
    for rec, ex in zip(train_records, converted):
        sec = _sections(ex.response)
        calc_lines = [ln for ln in sec["Evidence"].splitlines() if ln.startswith("CALC: ")]
        expected = []
        for inner in ANNOTATION.findall(rec["answer"]):
            expr, result = inner.rsplit("=", 1)
            calc = D.Calculation(D.normalize_expression(expr), result.strip().replace(",", ""))
            if not has_operator(calc.expr):
                continue
            if calc.restates_number:  # "1*2 = 2" stays in the Reasoning text, not in the Evidence
                assert calc.line not in calc_lines, ex.id
                n_restating += 1
            else:
                expected.append(calc.line)
        # the annotations' CALC lines appear in order (lines read from plain text may sit between)
        it = iter(calc_lines)
        assert all(any(line == got for got in it) for line in expected), (ex.id, expected, calc_lines)
        n_lines += len(expected)
        n_other += len(calc_lines) - len(expected)
        for line in calc_lines:  # every CALC line holds, checked by the core's exact evaluator
            (verdict,) = check_claims(line)
            assert verdict.ok is True, (ex.id, line)
    assert (n_lines, n_restating) == (23075, 284)  # train annotations with an operator: 23,359
    assert n_other > 1000  # plain-text calculations and substitution checks


def test_reasoning_is_the_solution_without_annotations(train_records, converted):
    n_cents = 0
    for rec, ex in zip(train_records, converted):
        reasoning = _sections(ex.response)["Reasoning"]
        assert "<<" not in reasoning and ">>" not in reasoning and "####" not in reasoning
        n_lines = len([ln for ln in rec["answer"].rsplit("####", 1)[0].splitlines() if ln.strip()])
        lines = reasoning.splitlines()
        if lines[-1].startswith("In cents, that is "):  # the dollars -> cents step GSM8K leaves out
            n_cents += 1
            lines = lines[:-1]
        assert len(lines) == n_lines
    assert n_cents == 5


def test_plan_has_one_numbered_item_per_step(converted):
    for ex in converted:
        sec = _sections(ex.response)
        items = sec["Plan"].splitlines()
        assert [int(i.split(".", 1)[0]) for i in items] == list(range(1, len(items) + 1))
        assert len(items) == len(sec["Reasoning"].splitlines())
        assert all(i.endswith(".") for i in items)


def test_sanity_check_mentions_the_final_value_and_the_question(train_records, converted):
    for rec, ex in zip(train_records, converted):
        sanity = _sections(ex.response)["Sanity_check"]
        assert re.search(rf"(?<![\d.]){re.escape(ex.answer)}(?![\d])", sanity), ex.id
        assert sanity.startswith("The question asks: ")
        assert f"The final value is {ex.answer}" in sanity


def test_conversion_on_known_record():
    rec = {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
        "clips altogether in April and May.\n#### 72",
        "id": "gsm8k-train-1",
    }
    ex = D.gsm8k_to_dsa(rec)
    assert ex.response == (
        "<reasoning>\nPlan:\n1. Divide 48 by 2 to find the clips in May.\n"
        "2. Add 48 and 24 to find the clips altogether in April and May.\n"
        "Reasoning:\nNatalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
        "Evidence:\nCALC: 48/2 = 24\nCALC: 48+24 = 72\n"
        "Sanity_check:\nThe question asks: How many clips did Natalia sell altogether in April and May?\n"
        "The final value is 72 clips.\nIt is the result of the last calculation, 48+24 = 72.\n"
        "It is a whole number and not negative, as a count must be.\n"
        "</reasoning>\n<answer>\n72\n</answer>"
    )
    assert (ex.answer, ex.source, ex.id) == ("72", "gsm8k", "gsm8k-train-1")


def test_bare_annotations_are_folded_into_the_text():
    sol = D.parse_solution("He has <<5*3=15>>15 goats and pays $<<15*2=30>>30.\n#### 30")
    assert sol.steps[0].text == "He has 5*3 = 15 goats and pays 15*2 = $30."
    assert [c.line for c in sol.calculations] == ["CALC: 5*3 = 15", "CALC: 15*2 = 30"]


def test_annotation_quirks_are_normalised():
    sol = D.parse_solution("a <<+30+46=76>>76 b <<560//10=56>>56 c <<3*+6=18>>18 d 1,200 / 200 = <<6=6>>6"
                           "\ne x = <<465=465>>465\n#### 6")
    assert [c.line for c in sol.calculations] == [
        "CALC: 30+46 = 76", "CALC: 560/10 = 56", "CALC: 3*6 = 18", "CALC: 1200/200 = 6"]
    assert sol.calculations[-1].origin == "text"
    assert sol.skipped == ("465=465",)


def test_solution_without_annotations_uses_plain_statements():
    sol = D.parse_solution("349 - 108 = 241 and 241 - 153 = 88\nThere are 88 pieces left.\n#### 88")
    assert [c.line for c in sol.calculations] == ["CALC: 349-108 = 241", "CALC: 241-153 = 88"]
    # mixed numbers and variables are not taken as calculations; an implicit product is
    sol = D.parse_solution("needs 3 / 4 * 2 = 1 1/2 feet, 2 + 1 1/2 = 3 1/2, 4x + 12 = 56, 44(.50)=22\n#### 7")
    assert [c.line for c in sol.calculations] == ["CALC: 44*(.50) = 22"]
    ex = D.gsm8k_to_dsa({"question": "How many?", "answer": "Let x be 7.\nSo x = 7\n#### 7"})
    evidence = _sections(ex.response)["Evidence"]
    assert "CALC" not in evidence and "7" in evidence


def test_plain_text_calculations_are_verified_before_use():
    sol = D.parse_solution("A costs 2 + 3 = 5 and B costs 10 x 1,248 = 11,480.\nSo 5 * 4 = 20.\n#### 20")
    assert [c.line for c in sol.calculations] == ["CALC: 2+3 = 5", "CALC: 5*4 = 20"]  # 12480 != 11480
    assert all(c.origin == "text" for c in sol.calculations)
    # "X*2 - 40 = 250" is not read as "2 - 40 = 250"; clock times and mixed numbers are left alone
    sol = D.parse_solution("X*2 - $40 = $250 at 12:10+2:00 = 2:10, 2 + 1 1/2 = 3 1/2\n#### 145")
    assert sol.calculations == ()
    # percents, implicit products, grouped operands, spaced thousands and U+2212 are read
    sol = D.parse_solution("40% + 20% = 60%\nState:35(2/5)=14\n1.5 x (1 + 1/3) = 2\n"
                           "1 000 000 + 500 000 = 1 500 000\n$100 \u2212 $3 = $97\n#### 97")
    assert [c.line for c in sol.calculations] == [
        "CALC: 40%+20% = 60%", "CALC: 35*(2/5) = 14", "CALC: 1.5*(1+1/3) = 2",
        "CALC: 1000000+500000 = 1500000", "CALC: 100-3 = 97"]


def test_algebraic_solution_gets_substitution_checks():
    rec = {"question": "How many goats?", "answer": "Let x be the number of goats\nPigs:2(4+x)=8+2x\n"
           "Total:x+4+x+8+2x=56\n4x+12=56\n4x=44\nx=<<11=11>>11 goats\n#### 11"}
    sol = D.parse_solution(rec["answer"])
    assert [s.calculation.line for s in sol.substitutions] == [
        "CALC: 2*(4+11) = 8+2*11", "CALC: 11+4+11+8+2*11 = 56", "CALC: 4*11+12 = 56"]
    assert {(s.variable, s.value) for s in sol.substitutions} == {("x", "11")}
    sanity = _sections(D.gsm8k_to_dsa(rec).response)["Sanity_check"]
    assert "Putting x = 11 back into 2(4+x) = 8+2x gives 2*(4+11) = 8+2*11, which holds." in sanity
    # a value that does not satisfy the equation is not written as evidence
    assert D.parse_solution("3x-5=16\nx = 8\n#### 8").substitutions == ()
    # two different values for one letter: no substitution
    assert D.parse_solution("4 * x = 44\nx = 12\nx = 11\n#### 11").substitutions == ()
    off = D.ConvertConfig(max_substitution_checks=0)
    assert D.parse_solution(rec["answer"], off).substitutions == ()


def test_dollars_to_cents_step_is_added_when_the_question_asks_in_cents():
    rec = {"question": "How many cents does it cost?", "answer": "It costs 0.14*3.5 = $<<0.14*3.5=0.49>>0.49\n#### 49"}
    sec = _sections(D.gsm8k_to_dsa(rec).response)
    assert sec["Reasoning"].splitlines()[-1] == "In cents, that is 0.49*100 = 49 cents."
    assert sec["Evidence"].splitlines() == ["CALC: 0.14*3.5 = 0.49", "CALC: 0.49*100 = 49"]
    rec["question"] = "How many dollars does it cost?"
    assert "In cents" not in D.gsm8k_to_dsa(rec).response


def test_sanity_check_is_honest_when_the_final_value_disagrees_with_the_working():
    rec = {"question": "How many points?", "answer": "48 + 16 = <<48+16=64>>64 points.\n#### 66"}
    sanity = _sections(D.gsm8k_to_dsa(rec).response)["Sanity_check"]
    assert "It is not what the last calculation gives (48+16 = 64), so the working above does not reach it." in sanity


@given(st.text(max_size=200), st.text(max_size=20))
def test_converter_never_raises_on_text_with_a_final_line(body, final):
    final = final.replace("\n", " ")
    record = {"question": "How many?", "answer": f"{body}\n#### {final}"}
    if not D.normalize_final(final):
        with pytest.raises(ValueError, match="empty"):
            D.gsm8k_to_dsa(record)
        return
    ex = D.gsm8k_to_dsa(record)
    assert ex.answer == D.normalize_final(final)


_ops = st.sampled_from("+-*/")


@given(st.lists(st.tuples(st.integers(2, 999), _ops, st.integers(2, 99), st.booleans()), min_size=1, max_size=6))
def test_generated_annotations_become_calc_lines(steps):
    lines, expected, shown = [], [], []
    for a, op, b, stated in steps:
        if op == "/":
            a *= b  # exact division
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        ann = f"<<{a}{op}{b}={value}>>{value}"
        lines.append(f"We get {a} {op} {b} = {ann} units." if stated else f"We get {ann} units.")
        expected.append(f"CALC: {a}{op}{b} = {value}")
        shown.append(f"We get {a} {op} {b} = {value} units." if stated else f"We get {a}{op}{b} = {value} units.")
    ex = D.gsm8k_to_dsa({"question": "How many units?", "answer": "\n".join(lines) + f"\n#### {value}"})
    sec = _sections(ex.response)
    assert sec["Evidence"].splitlines() == expected
    assert sec["Reasoning"].splitlines() == shown
    assert len(sec["Plan"].splitlines()) == len(steps)
    g = grade(ex.response, value)
    assert g.issues == () and g.total == g.max_total


_expr_text = st.text(alphabet="0123456789.,+-*/x×÷−() $%", max_size=40)


@given(_expr_text, st.text(alphabet="0123456789,.$ -", max_size=15))
def test_normalisation_is_idempotent(expr, final):
    once = D.normalize_expression(expr)
    assert D.normalize_expression(once) == once
    assert not set(once) & set(" $×÷−")
    value = D.normalize_final(final)
    assert D.normalize_final(value) == value and "," not in value


def test_conversion_is_deterministic(train_records):
    for rec in train_records[:200]:
        assert D.gsm8k_to_dsa(rec) == D.gsm8k_to_dsa(dict(rec))


# The train records whose conversion cannot earn the dsa-cast maximum, and why (also in docs/data.md).
# no_claims: the solution has no calculation the core evaluator can check, so Evidence has no CALC line.
NO_CHECKABLE_CALCULATION = {
    "gsm8k-train-303": "mixed numbers (3 / 4 * 2 = 1 1/2)",
    "gsm8k-train-692": "clock times (6:00+18 hours = 00:00)",
    "gsm8k-train-803": "mixed numbers (2 - 1/2 = 1 1/2)",
    "gsm8k-train-1629": "fractions added in words (3/6 plus 2/6 plus 1/6 equals 6/6)",
    "gsm8k-train-2242": "its only equations restate a number once x=1 is put in (2*1 = 1+1)",
    "gsm8k-train-2430": "dollars and cents mixed in one statement ($2.50 - $2.24 = 26 cents)",
    "gsm8k-train-3485": "a least common multiple found by listing multiples",
    "gsm8k-train-4350": "clock times (2:51+3:00 = 5:51)",
    "gsm8k-train-6719": "fractions with units (7/12 / 1/12/day = 7 days)",
    "gsm8k-train-6900": "the solved value is written as a fraction (x=121/11)",
}
# unsupported_answer: GSM8K's #### value is not what its own working reaches.
FINAL_VALUE_NOT_REACHED = {
    "gsm8k-train-357": "working gives 64, #### 66",
    "gsm8k-train-658": "working gives the time 0730, #### 730",
    "gsm8k-train-1155": "working gives 207, #### 1035",
    "gsm8k-train-2771": "working gives 108, #### 106",
    "gsm8k-train-3335": "working gives 7200 but states 4200+3000 = 8600, #### 7200 not reached",
    "gsm8k-train-4797": "working gives 120, #### 140",
    "gsm8k-train-5351": "working gives 33 but states 13 + 4 + 16 = 45, #### 33 not reached",
    "gsm8k-train-6158": "working states 70 + 40 = 100, #### 110",
    "gsm8k-train-6761": "working gives 18, #### 14",
    "gsm8k-train-7445": "working gives 140, #### 280",
}


def test_acceptance_every_train_record_earns_the_dsa_cast_maximum(train_records, converted):
    """grade(response, #### answer) with the dsa-cast rubric: the maximum and no issue code for
    every converted train record except the listed ones, which fail for exactly the listed reason."""
    exceptions = {}
    for rec, ex in zip(train_records, converted):
        g = grade(ex.response, rec["answer"])
        assert g.rubric == "dsa-cast" and g.correct is True, rec["id"]
        if g.total != g.max_total or g.issues:
            exceptions[rec["id"]] = (g.issues, g.max_total - g.total)
    expected = {i: (("no_claims",), 1.5) for i in NO_CHECKABLE_CALCULATION}
    expected |= {i: (("unsupported_answer",), 0.5) for i in FINAL_VALUE_NOT_REACHED}
    assert exceptions == expected
    assert len(train_records) - len(exceptions) == 7453


# ------------------------------------------------------------------------------------------------
# competition JSONL, CSV, split


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


WRAPPED_R = "<reasoning>\nPlan:\n1. Add.\nReasoning:\n2 + 3 = 5\nEvidence:\nCALC: 2+3 = 5\nSanity_check:\n5 > 2\n</reasoning>"


def test_dsa_jsonl_field_fallbacks(tmp_path):
    rows = [
        {"question": "What is 2+3?", "reasoning": WRAPPED_R, "answer": "<answer>5</answer>"},
        {"prompt": "P?", "solution": "Plan: add", "final_answer": "7"},
        {"input": "I?", "text": "bare reasoning", "answer": 9},
        {"question": "Q?", "reasoning": WRAPPED_R + "\n<answer>\n5\n</answer>"},
    ]
    res = D.load_dsa_jsonl(_write_jsonl(tmp_path / "c.jsonl", rows))
    assert res.bad_lines == ()
    a, b, c, d = res.examples
    assert (a.question, a.answer) == ("What is 2+3?", "5")
    assert a.response == WRAPPED_R + "\n<answer>5</answer>"
    assert (b.question, b.answer) == ("P?", "7")
    assert b.response == "<reasoning>\nPlan: add\n</reasoning>\n<answer>\n7\n</answer>"
    assert (c.question, c.answer, c.response) == ("I?", "9", "<reasoning>\nbare reasoning\n</reasoning>\n<answer>\n9\n</answer>")
    assert (d.answer, d.response) == ("5", WRAPPED_R + "\n<answer>\n5\n</answer>")
    assert [e.id for e in res.examples] == ["c.jsonl:1", "c.jsonl:2", "c.jsonl:3", "c.jsonl:4"]
    assert all(parse(e.response).exact_format for e in (a, d))


def test_dsa_jsonl_prebuilt_text_is_used_verbatim(tmp_path):
    prompt = D.build_prompt("What is 1+1?", system_prompt="Be brief.")
    response = WRAPPED_R.replace("5", "2") + "\n<answer>\n2\n</answer>"
    res = D.load_dsa_jsonl(_write_jsonl(tmp_path / "t.jsonl", [{"text": prompt + response + D.END_OF_TURN}]))
    (ex,) = res.examples
    assert (ex.prompt, ex.response, ex.answer, ex.question) == (prompt, response, "2", "What is 1+1?")
    assert ex.prompt_text() == prompt  # no second system prompt
    assert ex.prompt_text(prefill=True) == prompt + "<reasoning>\n"


def test_dsa_jsonl_errors_name_file_and_line_and_skip_counts(tmp_path):
    p = _write_jsonl(tmp_path / "bad.jsonl", [
        {"question": "ok?", "reasoning": "r", "answer": "1"},
        "[1, 2]",
        {"reasoning": "r", "answer": "1"},
        {"question": "q?", "answer": "1"},
        {"question": "q?", "reasoning": "r"},
        "{broken",
        {"question": "ok2?", "reasoning": "r", "answer": "<answer>2</answer>"},
    ])
    with pytest.raises(D.DataFormatError, match=r"bad\.jsonl:2: expected a JSON object, got list"):
        D.load_dsa_jsonl(p)
    res = D.load_dsa_jsonl(p, skip_bad=True)
    assert [e.answer for e in res.examples] == ["1", "2"]
    assert [b.line for b in res.bad_lines] == [2, 3, 4, 5, 6]
    reasons = [b.reason for b in res.bad_lines]
    assert "no question" in reasons[1] and "no reasoning" in reasons[2] and "no answer" in reasons[3]
    assert "invalid JSON" in reasons[4]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        D.load_dsa_jsonl(tmp_path / "nope.jsonl")


_field_values = st.one_of(st.none(), st.integers(-5, 5), st.booleans(), st.text(max_size=30),
                         st.sampled_from(["<answer>4</answer>", WRAPPED_R, "  ", "<answer>\n\n</answer>"]))
_records = st.dictionaries(
    st.sampled_from(["question", "prompt", "input", "reasoning", "solution", "text", "answer",
                     "final_answer", "other"]), _field_values, max_size=6)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(_records, st.sampled_from(["{bad", "[]", "7", '"s"'])), min_size=1, max_size=8))
def test_dsa_jsonl_loader_only_raises_data_format_errors_at_the_right_line(tmp_path, rows):
    p = _write_jsonl(tmp_path / "h.jsonl", rows)
    res = D.load_dsa_jsonl(p, skip_bad=True)
    assert len(res.examples) + len(res.bad_lines) == len(rows)
    for ex in res.examples:
        assert ex.question.strip() and ex.answer.strip() and ex.response
        assert "<answer>" in ex.response
    if res.bad_lines:
        with pytest.raises(D.DataFormatError) as err:
            D.load_dsa_jsonl(p)
        assert err.value.line == res.bad_lines[0].line and err.value.path == str(p)
    else:
        assert D.load_dsa_jsonl(p) == res


def test_extra_csv_calc_expr_becomes_an_evidence_calc_line(tmp_path):
    p = tmp_path / "extra.csv"
    p.write_text(
        "question,answer,reasoning,calc_expr\n"
        "What is the square root of 144?,12,The square root of 144 is 12 because 12*12 = 144.,12*12 = 144\n"
        '"A $25 shirt is 20% off, what is the sale price?",20,"The discount is 5, so 25 - 5 = 20.",25-5\n'
        f'"Sectioned?",5,"{WRAPPED_R}",3+2\n',
        encoding="utf-8",
    )
    a, b, c = D.load_extra_csv(p)
    assert _sections(a.response)["Evidence"] == "CALC: 12*12 = 144"
    assert _sections(b.response)["Evidence"] == "CALC: 25-5 = 20"
    assert _sections(c.response)["Evidence"] == "CALC: 2+3 = 5\nCALC: 3+2 = 5"
    for ex in (a, b, c):
        assert parse(ex.response).exact_format, ex.response
    assert (a.answer, a.id, a.source) == ("12", "extra.csv:2", "extra_csv")


def test_extra_csv_errors(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("question,reasoning\nq,r\n", encoding="utf-8")
    with pytest.raises(D.DataFormatError, match=r"x\.csv:1: missing column\(s\) \['answer'\]"):
        D.load_extra_csv(p)
    p.write_text("question,answer,reasoning,calc_expr\nq,1,r,\n,2,r,\n", encoding="utf-8")
    with pytest.raises(D.DataFormatError, match=r"x\.csv:3: empty 'question'"):
        D.load_extra_csv(p)


def _examples(n: int) -> list[D.Example]:
    return [D.Example(f"q{i}?", f"<reasoning>\nr{i}\n</reasoning>\n<answer>\n{i}\n</answer>", str(i), id=str(i))
            for i in range(n)]


@given(st.integers(0, 60), st.floats(0, 0.9), st.integers(0, 2**32 - 1))
def test_split_is_deterministic_disjoint_and_complete(n, frac, seed):
    exs = _examples(n)
    train, ev = D.split_examples(exs, eval_fraction=frac, seed=seed)
    assert (train, ev) == D.split_examples(exs, eval_fraction=frac, seed=seed)
    assert sorted(e.id for e in train + ev) == sorted(e.id for e in exs)
    assert n == 0 or len(train) >= 1
    if frac > 0 and n >= 2:
        assert len(ev) >= 1


def test_split_sizes_and_seed():
    exs = _examples(100)
    train, ev = D.split_examples(exs)
    assert (len(train), len(ev)) == (90, 10)
    assert D.split_examples(exs, seed=1)[1] != ev
    with pytest.raises(ValueError):
        D.split_examples(exs, eval_fraction=1.0)


# ------------------------------------------------------------------------------------------------
# chat template


def test_build_prompt_template():
    assert D.build_prompt("Q?", system_prompt="SYS") == (
        "<start_of_turn>user\nSYS\n\nQ?<end_of_turn>\n<start_of_turn>model\n")
    assert D.build_prompt("Q?", system_prompt="SYS", prefill=True).endswith("<start_of_turn>model\n<reasoning>\n")
    assert D.build_prompt("Q?", system_prompt="") == "<start_of_turn>user\nQ?<end_of_turn>\n<start_of_turn>model\n"
    prompt = D.build_prompt("Q?")
    assert prompt.startswith("<start_of_turn>user\n" + D.SYSTEM_PROMPT + "\n\nQ?")
    for heading in ("Plan:", "Reasoning:", "Evidence:", "Sanity_check:", "CALC:", "<answer>"):
        assert heading in D.SYSTEM_PROMPT


# ------------------------------------------------------------------------------------------------
# tokenisation


def test_mask_boundary_token_by_token(sp, converted):
    eot, L = sp.PieceToId(D.END_OF_TURN), 2048
    for ex in converted[:50]:
        prompt = D.build_prompt(ex.question)
        tok = D.tokenize_example(sp, prompt, ex.response, max_length=L)
        p_ids = [sp.bos_id()] + sp.EncodeAsIds(prompt)
        r_ids = sp.EncodeAsIds(ex.response + D.END_OF_TURN)
        P, R = len(p_ids), len(r_ids)
        assert (tok.prompt_length, tok.response_length, tok.truncated) == (P, R, False)
        assert tok.tokens.dtype == np.int32 and tok.loss_mask.dtype == np.int32 and tok.pad_mask.dtype == bool
        assert tok.tokens.shape == tok.loss_mask.shape == tok.pad_mask.shape == (L,)
        for i in range(L):
            if i < P:
                assert (tok.tokens[i], tok.loss_mask[i], tok.pad_mask[i]) == (p_ids[i], 0, True), i
            elif i < P + R:
                assert (tok.tokens[i], tok.loss_mask[i], tok.pad_mask[i]) == (r_ids[i - P], 1, True), i
            else:
                assert (tok.tokens[i], tok.loss_mask[i], tok.pad_mask[i]) == (sp.pad_id(), 0, False), i
        assert tok.tokens[0] == 2 and tok.tokens[P + R - 1] == eot
        assert sp.DecodeIds(tok.tokens[P : P + R].tolist()) == ex.response + D.END_OF_TURN
        assert sp.DecodeIds(tok.tokens[1:P].tolist()) == prompt


def test_mask_boundary_with_the_projects_tiny_tokenizer(converted):
    from dsa_cast_train.models import build_tiny_tokenizer

    tok_model = build_tiny_tokenizer()
    eot, reasoning = tok_model.PieceToId(D.END_OF_TURN), tok_model.PieceToId("<reasoning>")
    for ex in converted[:20]:
        prompt = ex.prompt_text(prefill=False)
        tok = D.tokenize_example(tok_model, prompt, ex.response, max_length=4096)
        P, n = tok.prompt_length, tok.prompt_length + tok.response_length
        assert tok.tokens[0] == 2 and tok.tokens[P] == reasoning and tok.tokens[n - 1] == eot
        assert tok.loss_mask[P - 1] == 0 and tok.loss_mask[P] == 1 and tok.loss_mask[n - 1] == 1
        assert tok.pad_mask[n - 1] and not tok.pad_mask[n:].any() and not tok.loss_mask[n:].any()
        assert tok_model.DecodeIds(tok.tokens[P:n].tolist()) == ex.response + D.END_OF_TURN


def test_end_of_turn_not_doubled_and_bos_optional(sp):
    a = D.tokenize_example(sp, "p", "r" + D.END_OF_TURN, max_length=16)
    b = D.tokenize_example(sp, "p", "r", max_length=16)
    assert np.array_equal(a.tokens, b.tokens)
    c = D.tokenize_example(sp, "p", "r", max_length=16, add_bos=False)
    assert c.tokens[0] != sp.bos_id() and c.prompt_length == b.prompt_length - 1


class _ZeroTokenizer:
    """Maps every character to id 0 (the pad id): padding must still be told apart."""

    def encode(self, text):
        return [0] * len(text)

    def bos_id(self):
        return 2

    def pad_id(self):
        return 0


def test_pad_mask_is_explicit_not_inferred_from_id_zero():
    tok = D.tokenize_example(_ZeroTokenizer(), "abc", "de", max_length=32)
    n = 1 + 3 + 2 + len(D.END_OF_TURN)
    assert tok.pad_mask.tolist() == [True] * n + [False] * (32 - n)
    assert tok.loss_mask.tolist() == [0] * 4 + [1] * (n - 4) + [0] * (32 - n)
    assert (tok.tokens[4:n] == 0).all()  # real tokens with id 0 keep loss mask 1


def test_over_length_policies(sp):
    prompt, response = D.build_prompt("What is 2+3?", system_prompt=""), WRAPPED_R + "\n<answer>\n5\n</answer>"
    full = D.tokenize_example(sp, prompt, response, max_length=512)
    P, R = full.prompt_length, full.response_length
    cut = D.tokenize_example(sp, prompt, response, max_length=P + 5)
    assert cut.truncated and (cut.prompt_length, cut.response_length) == (P, 5)
    assert cut.tokens.tolist() == full.tokens[: P + 5].tolist()
    assert cut.loss_mask.tolist() == [0] * P + [1] * 5 and cut.pad_mask.all()
    assert D.tokenize_example(sp, prompt, response, max_length=P + R) is not None
    assert D.tokenize_example(sp, prompt, response, max_length=P + R - 1, policy="drop") is None
    assert D.tokenize_with_reason(sp, prompt, response, max_length=P, policy="truncate") == (None, "dropped_prompt_too_long")
    with pytest.raises(ValueError, match="policy"):
        D.tokenize_example(sp, prompt, response, max_length=64, policy="wrap")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80), st.text(max_size=80), st.integers(2, 120), st.sampled_from(["truncate", "drop"]))
def test_mask_invariants(sp, prompt, response, max_length, policy):
    tok, reason = D.tokenize_with_reason(sp, prompt, response, max_length=max_length, policy=policy)
    if tok is None:
        assert reason in ("dropped_too_long", "dropped_prompt_too_long")
        return
    n = tok.prompt_length + tok.response_length
    assert tok.response_length >= 1 and n <= max_length
    assert tok.pad_mask.sum() == n and tok.pad_mask[:n].all()
    assert tok.loss_mask.sum() == tok.response_length
    assert tok.loss_mask[tok.prompt_length : n].all() and not tok.loss_mask[: tok.prompt_length].any()
    assert not (tok.loss_mask.astype(bool) & ~tok.pad_mask).any()
    assert tok.truncated == (reason == "truncated")


# ------------------------------------------------------------------------------------------------
# grain pipelines


def test_sft_dataset_batches_stats_and_determinism(sp, converted):
    exs = converted[:10]
    ds, stats = D.sft_dataset(exs, sp, max_length=2048, batch_size=4, seed=3, epochs=2)
    batches = list(ds)
    assert len(batches) == 5  # 20 rows // 4
    for b in batches:
        assert set(b) == {"input_tokens", "input_mask", "pad_mask"}
        assert b["input_tokens"].shape == b["input_mask"].shape == b["pad_mask"].shape == (4, 2048)
        assert b["input_tokens"].dtype == np.int32 and b["input_mask"].dtype == np.int32
        assert b["pad_mask"].dtype == bool
    assert stats.total == stats.kept == 10 and stats.dropped == 0
    again = list(D.sft_dataset(exs, sp, max_length=2048, batch_size=4, seed=3, epochs=2)[0])
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(batches, again) for k in x)
    other = list(D.sft_dataset(exs, sp, max_length=2048, batch_size=4, seed=4, epochs=2)[0])
    assert any(not np.array_equal(x["input_tokens"], y["input_tokens"]) for x, y in zip(batches, other))
    # each epoch holds every example once
    rows = np.concatenate([b["input_tokens"] for b in batches])
    first_epoch = {r.tobytes() for r in rows[:10]}
    second_epoch = {r.tobytes() for r in rows[10:]}
    assert len(first_epoch) == len(second_epoch) == 10 and first_epoch == second_epoch


def test_sft_dataset_remainder_and_policy_stats(sp, converted):
    exs = converted[:7]
    ds, _ = D.sft_dataset(exs, sp, max_length=2048, batch_size=3, seed=0, epochs=1)
    assert [b["input_tokens"].shape[0] for b in ds] == [3, 3]
    ds, _ = D.sft_dataset(exs, sp, max_length=2048, batch_size=3, seed=0, epochs=1, drop_remainder=False)
    assert [b["input_tokens"].shape[0] for b in ds] == [3, 3, 1]
    lengths = [D.tokenize_example(sp, e.prompt_text(), e.response, max_length=4096) for e in exs]
    totals = sorted(t.prompt_length + t.response_length for t in lengths)
    cap = totals[3]  # rows longer than the 4th shortest are over length
    _, st_drop = D.sft_dataset(exs, sp, max_length=cap, batch_size=1, seed=0, epochs=1, policy="drop")
    _, st_cut = D.sft_dataset(exs, sp, max_length=cap, batch_size=1, seed=0, epochs=1, policy="truncate")
    n_over = sum(t > cap for t in totals)
    assert (st_drop.kept, st_drop.dropped_too_long, st_drop.truncated) == (7 - n_over, n_over, 0)
    assert (st_cut.kept, st_cut.truncated, st_cut.dropped) == (7, n_over, 0)
    assert st_cut.max_tokens == cap


def test_grpo_dataset_numpy_string_columns(converted):
    exs = converted[:9]
    ds = D.grpo_dataset(exs, batch_size=4, seed=0, prefill=True)
    batches = list(ds)
    assert len(batches) == 2  # the short last batch is dropped
    by_q = {e.question: e for e in exs}
    for b in batches:
        assert set(b) == {"prompts", "question", "answer"}
        for col in b.values():
            assert isinstance(col, np.ndarray) and col.shape == (4,) and col.dtype.kind == "U"
        for p, q, a in zip(b["prompts"], b["question"], b["answer"]):
            assert p == D.build_prompt(q, prefill=True) and by_q[q].answer == a
    again = list(D.grpo_dataset(exs, batch_size=4, seed=0, prefill=True))
    assert [list(b["question"]) for b in batches] == [list(b["question"]) for b in again]
    with pytest.raises(ValueError, match="fewer than one batch"):
        D.grpo_dataset(exs[:2], batch_size=4, seed=0)


def test_import_is_light():
    import subprocess

    code = ("import sys, dsa_cast_train.data; "
            "print(sorted(m for m in ('jax', 'grain', 'flax', 'tunix', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# issue 10: hostile training JSONL and CSV lines are located errors

_HOSTILE_DATA_LINES = {
    "invalid UTF-8": b'{"question": "q\xff", "answer": "#### 1"}',
    "5000-digit integer": b'{"question": "q", "answer": ' + b"9" * 5000 + b"}",
    "100k-deep arrays": b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "NUL": b'{"question": "q", "answer": "#### 1"}\x00',
}


@pytest.mark.parametrize("name", sorted(_HOSTILE_DATA_LINES))
def test_hostile_training_lines_name_file_and_line(tmp_path, name):
    good = json.dumps({"question": "q?", "answer": "1+1 = <<1+1=2>>2\n#### 2"}).encode()
    p = tmp_path / "train.jsonl"
    p.write_bytes(good + b"\n" + _HOSTILE_DATA_LINES[name] + b"\n" + good + b"\n")
    with pytest.raises(D.DataFormatError, match=rf"^{re.escape(str(p))}:2: ") as err:
        D.load_gsm8k(tmp_path)
    assert err.value.line == 2
    assert len(D.load_gsm8k(tmp_path, skip_bad=True)) == 2
    dsa = tmp_path / "dsa.jsonl"
    dsa.write_bytes(_HOSTILE_DATA_LINES[name] + b"\n")
    with pytest.raises(D.DataFormatError, match=rf"^{re.escape(str(dsa))}:1: "):
        D.load_dsa_jsonl(dsa)


def test_extra_csv_bad_bytes_name_the_line(tmp_path):
    p = tmp_path / "extra.csv"
    p.write_bytes(b"question,answer,reasoning,calc_expr\nq1,1,,\nq2,2,,\nq3 \xff,3,,\n")
    with pytest.raises(D.DataFormatError, match=rf"^{re.escape(str(p))}:4: not UTF-8: invalid byte 0xff"):
        D.load_extra_csv(p)
    p.write_bytes(b"\xef\xbb\xbfquestion,answer,reasoning,calc_expr\nq1,1,,\n")  # a BOM is fine
    assert [e.question for e in D.load_extra_csv(p)] == ["q1"]
    p.write_bytes(b"question,answer,reasoning,calc_expr\nq1,1,,\nq\x002,2,,\n")
    with pytest.raises(D.DataFormatError, match=r":3: NUL byte"):
        D.load_extra_csv(p)
    p.write_bytes(b'question,answer,reasoning,calc_expr\n"' + b"x" * 200_000 + b'",1,,\n')
    with pytest.raises(D.DataFormatError, match=r"invalid CSV: field larger than field limit"):
        D.load_extra_csv(p)


def test_a_directory_given_as_data_is_a_located_error(tmp_path):
    (tmp_path / "train.jsonl").mkdir()
    with pytest.raises(D.DataFormatError, match=r"train\.jsonl: is a directory"):
        D.read_jsonl(tmp_path / "train.jsonl")
