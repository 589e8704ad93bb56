"""Run in the ``[train]`` venv: export a model to HF layout and record what Tunix does with it.

``python tests/frameworks/tunix_reference.py --out DIR [--source tiny|gemma3-270m-pypi]``
writes ``DIR/hf`` (``dsa_cast_train.export.export_safetensors``: weights, config, tokenizer
files) and ``DIR/reference.json``: for each evaluation prompt (built by the project's own
``build_prompt``), the prompt ids the Tunix evaluation feeds the model (BOS + SentencePiece ids)
and the greedy tokens and text of the Tunix evaluation's sampler (``evaluate.make_sampler``
called as ``evaluate.generate`` calls it). The framework tier (torch + transformers, another
venv) checks that ``AutoTokenizer`` / ``AutoModelForCausalLM`` reproduce both.

The tiny model gets every parameter drawn at random (Tunix initialises the MLP kernels at zero),
so the greedy tokens depend on every weight and every config field of the export.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# GSM8K-style questions written for this check (tests never read ../shared): money, percents,
# fractions, and the double spaces and trailing space that GSM8K questions do contain.
QUESTIONS = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting.  Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she "
    "needs. Her parents decided to give her $15 for that purpose, and her grandparents twice as much "
    "as her parents. How much more money does Betty need to buy the wallet? ",
    "A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total "
    "does it take?",
    "James writes a 3-page letter to 2 different friends twice a week.  How many pages does he "
    "write a year?",
    "Mark has a garden with flowers. He planted plants of three different colors in it. Ten of them "
    "are yellow, and there are 80% more of those in purple. There are only 25% as many green "
    "flowers as there are yellow and purple flowers. How many flowers does Mark have in his garden?",
)


def _randomise(model, seed: int) -> None:
    """Every parameter random: normal(0, 1) / sqrt(fan-in) for kernels (scale 1 for norms), and a
    small embedding, so the layers rather than the tied embedding pick the next token (a tiny
    model dominated by its embedding just repeats its last input token)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    state = nnx.state(model, nnx.Param)
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(paths_leaves))
    new = []
    for k, (path, x) in zip(keys, paths_leaves):
        name = jax.tree_util.keystr(path)
        if "embed" in name:
            scale = 0.05
        elif x.ndim >= 2:
            scale = 1.0 / float(x.shape[0]) ** 0.5
        else:
            scale = 0.5
        new.append((scale * jax.random.normal(k, x.shape, jnp.float32)).astype(x.dtype))
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, new))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="new directory for hf/ and reference.json")
    p.add_argument("--source", default="tiny", choices=("tiny", "gemma3-270m-pypi"))
    p.add_argument("--max-new-tokens", type=int, default=24)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=False)
    t0 = time.perf_counter()

    from dsa_cast_train import config as config_lib
    from dsa_cast_train import evaluate, export, models
    from dsa_cast_train.data.dsa_format import build_prompt

    if a.source == "tiny":
        cfg = config_lib.load_preset("tiny")
        loaded = models.load(cfg.model)
        _randomise(loaded.model, seed=1)
    else:
        spec = config_lib.ModelSpec(source="gemma3-270m-pypi", variant="gemma3-270m", dtype="float32")
        loaded = models.load(spec)
    # The tiny export is also reloaded through Tunix (verify); for the 270M that second copy
    # would push the process past 4 GiB, and the greedy parity checked by the caller is the
    # stronger check anyway.
    exported = export.export_safetensors(
        loaded.model, out / "hf", tokenizer=loaded.tokenizer, eos_ids=loaded.eos_ids,
        pad_id=loaded.pad_id, verify=a.source == "tiny")

    prompts = [build_prompt(q) for q in QUESTIONS]
    tok = loaded.tokenizer
    prompt_ids = [[tok.bos_id(), *tok.EncodeAsIds(p)] for p in prompts]
    budget = evaluate.prompt_budget(tok, prompts, max(len(ids) for ids in prompt_ids))
    sampler = evaluate.make_sampler(loaded, budget + a.max_new_tokens)
    result = sampler(prompts, max_generation_steps=a.max_new_tokens, max_prompt_length=budget,
                     eos_tokens=list(loaded.eos_ids), echo=False)
    greedy = [[int(t) for t in row] for row in result.tokens]
    reference = {
        "source": a.source,
        "export": {"tensors": exported.tensors, "parameters": exported.parameters, "dtype": exported.dtype},
        "eos_ids": list(loaded.eos_ids),
        "pad_id": loaded.pad_id,
        "max_new_tokens": a.max_new_tokens,
        "items": [{"question": q, "prompt": p, "prompt_ids": ids, "greedy_tokens": g, "greedy_text": t}
                  for q, p, ids, g, t in zip(QUESTIONS, prompts, prompt_ids, greedy, result.text)],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out / 'hf'} and {out / 'reference.json'} in {reference['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
