"""The shared stage command-line plumbing (dsa_cast_train.cli): parsing, overrides, error exits."""

from __future__ import annotations

import json

import pytest

from dsa_cast_train import cli, runs
from dsa_cast_train import config as config_lib


def _parser(**kw):
    return cli.stage_parser("sft", "Train.\n\nMore.", example="--sft.max_steps 5",
                            run_dir_help="where", overwrite_help="replace", **kw)


def test_resolve_applies_preset_sets_dotted_flags_and_stage_overrides(tmp_path):
    parser = _parser()
    parser.add_argument("--rubric")
    inv = cli.resolve(parser, ["--run-dir", str(tmp_path), "--set", "sft.max_steps=7",
                               "--eval.num_items", "3", "--rubric", "seed"],
                      lambda a: [("grpo.rubric", a.rubric)])
    assert inv is not None and inv.args.run_dir == str(tmp_path)
    assert inv.config.name == "tiny"
    assert (inv.config.sft.max_steps, inv.config.eval.num_items, inv.config.grpo.rubric) == (7, 3, "seed")


def test_print_config_prints_the_resolved_json_and_runs_nothing(tmp_path, capsys):
    assert cli.resolve(_parser(), ["--run-dir", str(tmp_path), "--print-config",
                                   "--set", "sft.max_steps=9"]) is None
    printed = json.loads(capsys.readouterr().out)
    assert printed["sft"]["max_steps"] == 9
    assert not any(tmp_path.iterdir())  # nothing written


def test_bad_field_exits_2_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.resolve(_parser(), ["--run-dir", str(tmp_path), "--set", "sft.max_stepz=1"])
    assert exc.value.code == 2
    assert "sft.max_stepz" in capsys.readouterr().err


def test_default_preset_is_configurable(tmp_path):
    inv = cli.resolve(_parser(default_preset="none"), ["--run-dir", str(tmp_path)])
    assert inv is not None and inv.args.preset == "none"


@pytest.mark.parametrize("error", [runs.RunDirError("run dir holds another stage"),
                                   FileNotFoundError("no such checkpoint"),
                                   config_lib.ConfigError("eval.compare names the same model")])
def test_execute_reports_user_errors_in_one_line(tmp_path, capsys, error):
    inv = cli.resolve(_parser(), ["--run-dir", str(tmp_path)])

    def run(config, run_dir, *, overwrite):
        raise error

    assert cli.execute(run, inv) is None
    assert capsys.readouterr().err == f"error: {error}\n"


def test_execute_passes_config_run_dir_and_overwrite_and_lets_bugs_through(tmp_path):
    inv = cli.resolve(_parser(), ["--run-dir", str(tmp_path), "--overwrite"])
    seen = {}

    def run(config, run_dir, *, overwrite):
        seen.update(config=config, run_dir=run_dir, overwrite=overwrite)
        return "result"

    assert cli.execute(run, inv) == "result"
    assert seen == {"config": inv.config, "run_dir": str(tmp_path), "overwrite": True}

    def buggy(config, run_dir, *, overwrite):
        raise KeyError("a bug is not a user error")

    with pytest.raises(KeyError):
        cli.execute(buggy, inv)
    assert cli.execute(lambda c, d, *, overwrite: (_ for _ in ()).throw(ValueError("x")), inv,
                       extra_errors=(ValueError,)) is None
