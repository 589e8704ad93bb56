"""GRPO step-time benchmark on the tiny model: the reward's share of a step, and the overhead of
``dsa_cast_train.grpo`` against a bare Tunix loop.

Two variants, in one process, on the same tiny model, data, settings and compile cache:

* ``ours``: :func:`dsa_cast_train.grpo.run` (run directory, ``RewardLogger``-wrapped
  ``dsa_cast.score.tunix_rewards``, the metric function that records format adherence and
  accuracy, ``metrics.jsonl`` / ``rollouts.jsonl``, progress lines);
* ``bare``: Tunix ``RLCluster`` + ``GRPOLearner`` built directly from the Tunix API with the same
  reward functions and nothing else.

Both get the same instrumentation: a clock around the reward functions. One GRPO step is the
interval between two successive reward calls (it holds the previous batch's actor update, the
next rollout, the reference log-probs and the rewards); the first ``warmup`` intervals (XLA
compilation) are dropped and the median of the rest is the step time. Variants alternate
(bare, ours, then ours, bare, ...) so that load drift on a shared machine and drift inside the
process hit both alike. Step time is reported as wall time and as process CPU time (all
threads); on a shared machine the CPU time is the steadier of the two.

Reported: median step time per variant and their ratio (target: ours within 5%), the share of a
step spent inside the reward functions (target: under 1%), the share spent in our metric
function, and the reward time of real DSA completions (GSM8K conversions, 4 per batch like the
run) against the same tiny step, a pessimistic bound because a real model's step is far longer.
Results: ``benchmarks/results/bench_grpo.json``.

    python benchmarks/bench_grpo.py              # 30 steps x 2 repetitions per variant
    python benchmarks/bench_grpo.py --quick      # 8 steps x 1 repetition (smoke test)
    python benchmarks/bench_grpo.py --steps 20 --repetitions 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and targets of the benchmark.

    Attributes:
      steps: GRPO steps per variant run.
      warmup: leading step intervals dropped (compilation of rollout and update).
      repetitions: runs per variant, alternating bare/ours.
      batch_size: prompts per step (x ``num_generations`` completions).
      num_generations: completions per prompt.
      max_new_tokens: rollout length.
      limit: GSM8K training records read.
      target_reward_share: the reward functions' share of a step must stay below this.
      target_overhead: ours / bare - 1 must stay below this.
    """

    steps: int = 30
    warmup: int = 3
    repetitions: int = 2
    batch_size: int = 2
    num_generations: int = 2
    max_new_tokens: int = 16
    limit: int = 64
    target_reward_share: float = 0.01
    target_overhead: float = 0.05


class Clock:
    """Times the reward functions and stamps each batch (first function's call start)."""

    def __init__(self):
        self.stamps: list[float] = []  # wall clock (perf_counter) at each batch's first reward call
        self.cpu_stamps: list[float] = []  # process CPU time (all threads) at the same moments
        self.inside: list[float] = []  # wall seconds inside all reward functions, per batch

    def wrap(self, fns):
        out = []
        for i, fn in enumerate(fns):

            def timed(prompts, completions, _fn=fn, _first=(i == 0), **kwargs):
                t = time.perf_counter()
                if _first:
                    self.stamps.append(t)
                    self.cpu_stamps.append(time.process_time())
                    self.inside.append(0.0)
                values = _fn(prompts=prompts, completions=completions, **kwargs)
                self.inside[-1] += time.perf_counter() - t
                return values

            timed.__name__ = fn.__name__
            for attr in ("grader", "component"):
                if hasattr(fn, attr):
                    setattr(timed, attr, getattr(fn, attr))
            out.append(timed)
        return out

    def step_times(self, warmup: int) -> list[float]:
        return [b - a for a, b in pairwise(self.stamps)][warmup:]

    def step_cpu_times(self, warmup: int) -> list[float]:
        return [b - a for a, b in pairwise(self.cpu_stamps)][warmup:]

    def reward_shares(self, warmup: int) -> list[float]:
        steps = self.step_times(warmup)
        return [r / s for r, s in zip(self.inside[warmup:], steps, strict=False)]


def make_config(bc: BenchConfig):
    from dsa_cast_train import config

    return config.load_config(
        "tiny",
        overrides=[
            ("data.limit", bc.limit),  # no data.path: the embedded GSM8K
            ("grpo.max_steps", bc.steps),
            ("grpo.batch_size", bc.batch_size),
            ("grpo.micro_batch_size", bc.batch_size),
            ("grpo.num_generations", bc.num_generations),
            ("grpo.max_new_tokens", bc.max_new_tokens),
            ("grpo.save_every_steps", bc.steps),
            ("grpo.keep_checkpoints", 1),
            ("grpo.eval_prompts", 0),
        ],
    )  # the bare loop has no held-out evaluation either


def run_ours(cfg, workdir: Path) -> tuple[Clock, float]:
    """``grpo.run`` with the clock around the reward functions; returns (clock, logging seconds)."""
    from dsa_cast import score
    from dsa_cast_train import grpo

    clock = Clock()
    loggers = []
    real_logger = grpo.RewardLogger

    class CountingLogger(real_logger):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            loggers.append(self)

    saved = grpo.reward_functions, grpo.RewardLogger
    grpo.reward_functions = lambda rubric: clock.wrap(score.tunix_rewards(rubric))
    grpo.RewardLogger = CountingLogger
    try:
        grpo.run(cfg, workdir / "ours", overwrite=True)
    finally:
        grpo.reward_functions, grpo.RewardLogger = saved
    return clock, loggers[0].logging_seconds


def run_bare(cfg, workdir: Path) -> Clock:
    """The same GRPO run from the Tunix API alone."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp
    from flax import nnx
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner as grpo_lib
    from tunix.rl.rollout import base_rollout
    from tunix.sft import metrics_logger

    from dsa_cast import score
    from dsa_cast_train import data, grpo, models, sft

    g = cfg.grpo
    mesh = models.make_mesh(cfg.mesh.fsdp, cfg.mesh.tp)
    loaded = models.load(cfg.model, mesh)
    graphdef, state = nnx.split(loaded.model)
    reference = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
    examples = data.split_examples(
        sft.load_examples(cfg.data, "train"), eval_fraction=cfg.data.eval_fraction, seed=cfg.data.split_seed
    )[0]
    system = sft.system_prompt(cfg.data)
    examples, _ = grpo.filter_prompts(
        examples, loaded.tokenizer, max_prompt_length=g.max_prompt_length, system_prompt=system, prefill=False
    )
    Role = rl_cluster_lib.Role
    cluster = rl_cluster_lib.RLCluster(
        actor=loaded.model,
        reference=reference,
        tokenizer=loaded.tokenizer,
        cluster_config=rl_cluster_lib.ClusterConfig(
            role_to_mesh={Role.ACTOR: mesh, Role.REFERENCE: mesh, Role.ROLLOUT: mesh},
            rollout_engine="vanilla",
            offload_to_cpu=False,
            training_config=rl_cluster_lib.RLTrainingConfig(
                actor_optimizer=grpo.make_optimizer(g),
                eval_every_n_steps=g.eval_every_steps,
                max_steps=g.max_steps,
                mini_batch_size=g.batch_size,
                train_micro_batch_size=g.micro_batch_size,
                checkpoint_root_directory=str(workdir / "bare" / "checkpoints"),
                checkpointing_options=ocp.CheckpointManagerOptions(
                    save_interval_steps=g.save_every_steps, max_to_keep=g.keep_checkpoints
                ),
                # TensorBoard like ours: Tunix's own logging is not our overhead
                metrics_logging_options=metrics_logger.MetricsLoggerOptions(
                    log_dir=str(workdir / "bare" / "tensorboard")
                ),
            ),
            rollout_config=base_rollout.RolloutConfig(
                max_tokens_to_generate=g.max_new_tokens,
                max_prompt_length=g.max_prompt_length,
                kv_cache_size=g.max_prompt_length + g.max_new_tokens,
                temperature=g.temperature,
                top_p=g.top_p,
                top_k=g.top_k,
                eos_tokens=list(loaded.eos_ids),
                seed=g.seed,
            ),
        ),
    )
    clock = Clock()
    learner = grpo_lib.GRPOLearner(
        rl_cluster=cluster,
        reward_fns=clock.wrap(score.tunix_rewards(g.rubric)),
        algo_config=grpo_lib.GRPOConfig(
            num_generations=g.num_generations, num_iterations=g.num_iterations, beta=g.beta, epsilon=g.epsilon
        ),
    )
    ds = data.grpo_dataset(
        examples, batch_size=g.batch_size, seed=cfg.data.shuffle_seed, system_prompt=system, epochs=None
    )
    with mesh:
        learner.train(ds)
    return clock


def real_text_reward_seconds(bc: BenchConfig, batches: int = 200) -> float:
    """Median seconds the reward functions take for one batch of real DSA completions."""
    import numpy as np

    from dsa_cast import score
    from dsa_cast_train import data

    n = bc.batch_size * bc.num_generations
    exs = [data.gsm8k_to_dsa(r) for r in data.load_gsm8k(None, "train", limit=n * batches)]
    times = []
    for b in range(batches):
        chunk = exs[b * n : (b + 1) * n]
        fns = score.tunix_rewards("dsa-cast")  # fresh functions: no cache hit across batches
        kw = {
            "answer": np.array([e.answer for e in chunk]),
            "question": np.array([e.question for e in chunk]),
            "mode": "train",
        }
        t = time.perf_counter()
        for fn in fns:
            fn(prompts=[""] * n, completions=[e.response for e in chunk], **kw)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 steps, one repetition per variant")
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps per run (default 30)")
    ap.add_argument("--repetitions", type=int, default=None, help="runs per variant (default 2)")
    ap.add_argument("--out", default=str(RESULTS / "bench_grpo.json"))
    args = ap.parse_args(argv)
    bc = BenchConfig(steps=8, warmup=2, repetitions=1) if args.quick else BenchConfig()
    if args.steps is not None or args.repetitions is not None:
        bc = replace(bc, steps=args.steps or bc.steps, repetitions=args.repetitions or bc.repetitions)
    cache = REPO / ".cache" / "jax"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    import logging

    logging.basicConfig(level=logging.WARNING)
    cfg = make_config(bc)
    work = Path(tempfile.mkdtemp(prefix="bench_grpo_"))
    steps = {"bare": [], "ours": []}
    cpu = {"bare": [], "ours": []}
    shares = {"bare": [], "ours": []}
    logging_share = []
    try:
        for rep in range(bc.repetitions):
            # alternate the order too, so in-process drift (caches, heap) is not charged to one variant
            for variant in ("bare", "ours") if rep % 2 == 0 else ("ours", "bare"):
                t = time.perf_counter()
                if variant == "bare":
                    clock = run_bare(cfg, work / f"r{rep}")
                else:
                    clock, log_s = run_ours(cfg, work / f"r{rep}")
                    logging_share.append((log_s / len(clock.stamps)) / statistics.median(clock.step_times(bc.warmup)))
                print(f"rep {rep}: {variant} run {time.perf_counter() - t:.1f} s", flush=True)
                steps[variant] += clock.step_times(bc.warmup)
                cpu[variant] += clock.step_cpu_times(bc.warmup)
                shares[variant] += clock.reward_shares(bc.warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = {k: statistics.median(v) for k, v in steps.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    overhead_wall = wall["ours"] / wall["bare"] - 1.0
    overhead_cpu = cpu_med["ours"] / cpu_med["bare"] - 1.0
    reward_share = statistics.median(shares["ours"])
    real_reward = real_text_reward_seconds(bc)
    result = {
        "benchmark": "bench_grpo",
        "config": asdict(bc),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
        },
        "step_wall_seconds_median": wall,
        "step_cpu_seconds_median": cpu_med,
        "step_wall_seconds_all": steps,
        "step_cpu_seconds_all": cpu,
        "overhead_vs_bare_wall": overhead_wall,
        "overhead_vs_bare_cpu": overhead_cpu,
        "reward_share_median": {k: statistics.median(v) for k, v in shares.items()},
        "metric_fn_share": statistics.median(logging_share),
        "real_dsa_batch_reward_seconds": real_reward,
        "real_dsa_reward_share_of_tiny_step": real_reward / wall["ours"],
        "targets": {"reward_share_below": bc.target_reward_share, "overhead_below": bc.target_overhead},
        "pass": {
            "reward_share": reward_share < bc.target_reward_share,
            "overhead_cpu": overhead_cpu < bc.target_overhead,
            "overhead_wall": overhead_wall < bc.target_overhead,
        },
    }
    n = len(steps["bare"]), len(steps["ours"])
    print(
        f"step time, median of {n[0]}/{n[1]} steps: wall bare {wall['bare'] * 1e3:.1f} ms, ours "
        f"{wall['ours'] * 1e3:.1f} ms ({overhead_wall:+.2%}); CPU bare {cpu_med['bare'] * 1e3:.1f} ms, ours "
        f"{cpu_med['ours'] * 1e3:.1f} ms ({overhead_cpu:+.2%}); target < {bc.target_overhead:.0%}"
    )
    print(
        f"reward functions: {reward_share:.3%} of a step (target < {bc.target_reward_share:.0%}); "
        f"our metric fn: {result['metric_fn_share']:.3%}"
    )
    print(
        f"real DSA completions: {real_reward * 1e3:.2f} ms per batch of "
        f"{bc.batch_size * bc.num_generations} = {result['real_dsa_reward_share_of_tiny_step']:.2%} "
        f"of the tiny step (an upper bound for real models)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
