"""TRL ``GRPOTrainer`` (real TRL, transformers, torch CPU) training with ``trl_rewards()``.

The model is the project's tiny random Gemma 3 exported to HF (``tiny_reference``), first
fitted for a few seconds to one DSA completion so that its samples score above zero; TRL then
runs two GRPO steps. Checked against TRL's own logs: one ``rewards/dsa_cast_<component>``
column per component, their sum equal to ``grade().total`` of each logged completion,
reference-less rows skipped (NaN in every column, left out of ``reward`` and of
``dsa_cast/total``), the ``dsa_cast/*`` columns and metrics logged once per step, and no
completion ending in a literal ``<end_of_turn>``.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from dsa_cast.adapters import completion_text
from dsa_cast.markers import strip_end_markers
from dsa_cast.score import grade, trl_rewards
from dsa_cast_train.data.dsa_format import END_OF_TURN

QUESTION = "6 boxes hold 7 apples each. How many apples are there?"
COMPLETION = (
    "<reasoning>\nPlan:\n1. Multiply the boxes by the apples per box.\n"
    "Reasoning:\n6 boxes of 7 apples make 6 * 7 = 42 apples.\n"
    "Evidence:\nCALC: 6 * 7 = 42\n"
    "Sanity_check:\n42 apples in boxes of 7 gives 6 boxes.\n</reasoning>\n<answer>\n42\n</answer>"
)
ROWS = [  # (answer, question): a reference, no reference (skipped), a reference the model misses
    ("#### 42", QUESTION),
    (None, QUESTION.replace("6 boxes", "Six boxes")),
    ("#### 41", QUESTION.replace("apples are", "apples are there, in all,")),
]
COMPONENTS = ("format", "structure", "correctness", "evidence", "coherence")


def _messages(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]  # short prompts: the fit takes seconds


def _fit(model, tok, steps: int = 60) -> None:
    """Teach the random model one chat-formatted DSA completion (CPU, a few seconds)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = []
    for _, q in ROWS:
        prompt = tok.apply_chat_template(_messages(q), add_generation_prompt=True, tokenize=False)
        batch.append(tok(prompt + COMPLETION + END_OF_TURN, add_special_tokens=False).input_ids)
    width = max(map(len, batch))
    ids = torch.tensor([b + [tok.pad_token_id] * (width - len(b)) for b in batch])
    mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch])
    labels = ids.masked_fill(mask == 0, -100)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5, loss.item()


class Snapshots(TrainerCallback):
    """TRL keeps only the last generation batch in ``trainer._logs``: copy it after each step."""

    def __init__(self) -> None:
        self.trainer = None
        self.steps: list[dict] = []

    def on_step_end(self, args, state, control, **kwargs):
        logs = self.trainer._logs
        self.steps.append({
            "prompt": list(logs["prompt"]), "completion": list(logs["completion"]),
            "rewards": {k: list(v) for k, v in logs["rewards"].items()},
            "extra": {k: list(v) for k, v in logs["extra"].items()},
        })


@pytest.fixture(scope="module")
def trained(tiny_reference, tmp_path_factory):
    hf_dir, _ = tiny_reference
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    _fit(model, tok)
    data = Dataset.from_list([{"prompt": _messages(q), "question": q, "answer": a} for a, q in ROWS])
    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo")), max_steps=2, per_device_train_batch_size=6,
        num_generations=2, max_completion_length=160, learning_rate=1e-5, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0, temperature=0.7,
        beta=0.0, dataloader_num_workers=0, disable_tqdm=True)
    snap = Snapshots()
    trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=trl_rewards(), args=args,
                          train_dataset=data, callbacks=[snap])
    snap.trainer = trainer
    trainer.train()
    return trainer, snap


def test_one_reward_column_per_component(trained):
    trainer, snap = trained
    names = [f"dsa_cast_{c}" for c in COMPONENTS]
    assert trainer.reward_func_names == names
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2 and len(snap.steps) == 2
    for h in logged:
        for n in names:
            assert f"rewards/{n}/mean" in h
        for metric in ("dsa_cast/total", "dsa_cast/accuracy", "dsa_cast/clean_rate"):
            assert metric in h


def test_components_sum_to_grade_total_and_reference_less_rows_are_skipped(trained):
    _, snap = trained
    answers = {q: a for a, q in ROWS}
    checked = skipped = 0
    best = 0.0
    for step in snap.steps:
        assert len(step["completion"]) == 6
        for i, (prompt, completion) in enumerate(zip(step["prompt"], step["completion"])):
            text = completion_text(completion)
            assert not text.rstrip().endswith(END_OF_TURN)  # the marker is special: decoded away
            question = prompt[-1]["content"]
            values = [step["rewards"][f"dsa_cast_{c}"][i] for c in COMPONENTS]
            if answers[question] is None:
                assert all(math.isnan(v) for v in values)
                skipped += 1
                continue
            g = grade(strip_end_markers(text), answers[question], question=question)
            assert math.fsum(values) == pytest.approx(g.total, abs=1e-5)
            assert step["extra"]["dsa_cast/predicted"][i] == (g.predicted or "")
            assert step["extra"]["dsa_cast/correct"][i] == g.correct
            best = max(best, g.total)
            checked += 1
    assert checked >= 6 and skipped >= 2
    assert best >= 8.0  # the fitted model writes DSA: the sums checked are not all zero


def test_total_metric_matches_trls_reward_without_reference_less_rows(trained):
    trainer, snap = trained
    logged = [h for h in trainer.state.log_history if "reward" in h]
    for h, step in zip(logged, snap.steps):
        rows = [math.fsum(step["rewards"][f"dsa_cast_{c}"][i] for c in COMPONENTS)
                for i in range(len(step["completion"]))]
        scored = [r for r in rows if not math.isnan(r)]
        assert h["reward"] == pytest.approx(sum(scored) / len(scored), abs=1e-4)
        assert h["dsa_cast/total"] == pytest.approx(h["reward"], abs=1e-4)
        assert len(step["extra"]["dsa_cast/predicted"]) == len(step["completion"])  # once per step
