"""Benchmark: training steps per second of our discrete CQL against d3rlpy's DiscreteCQL.

Both learners train on the same random offline data set (default: 50k transitions in episodes of
20 steps, 102 state features, 51 actions: DeepEN's shapes), with the same network (ReLU MLP
102 -> 256 -> 256 -> 51, no dueling head, since d3rlpy has none), the same loss (Huber TD error
with a double-DQN target + CQL(H) with alpha 1), Adam (lr 1e-4, grad-norm clip 10), batch 256,
a hard target sync every 1000 steps, the same number of torch threads, and the same number of
steps after a warm-up. The timed steps run in short chunks that alternate between the two, so
that a machine shared with other jobs slows both alike; steps/s = all timed steps / their time.

What is timed per step:

* ours: :meth:`clinfuse.rl.learners.QLearner.fit` (minibatch sampling on tensors + the update);
* d3rlpy: the body of ``DiscreteCQL.fit`` without its logging: ``sample_transition_batch``
  + ``update`` (the sampling share is reported separately).

d3rlpy is an optional, benchmark-only dependency (``pip install d3rlpy``; it pins
``gymnasium==1.0.0``). Without it the script says so and times our learner alone.

Usage::

    .venv/bin/python benchmarks/rl_cql_speed.py                 # 300 steps after 30 warm-up
    .venv/bin/python benchmarks/rl_cql_speed.py --steps 1000 --threads 1

Writes ``benchmarks/results/rl_cql_speed.json`` and ``.md`` (atomically).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _machine import describe, machine_info  # noqa: E402  (benchmarks/ is on sys.path)
from clinfuse.core.runs import atomic_write_json, atomic_write_text
from clinfuse.rl.data import Trajectories
from clinfuse.rl.learners import QConfig, QLearner

GOAL = 1.5
"""The issue's target: our steps per second / d3rlpy's."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--transitions", type=int, default=50_000, help="rows of the data set")
    p.add_argument("--episode-len", type=int, default=20, help="steps per episode")
    p.add_argument("--obs-dim", type=int, default=102, help="state features (DeepEN: 102)")
    p.add_argument("--actions", type=int, default=51, help="discrete actions (DeepEN: 51)")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="MLP widths")
    p.add_argument("--batch", type=int, default=256, help="minibatch size")
    p.add_argument("--steps", type=int, default=300, help="timed training steps per learner")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    p.add_argument("--chunk", type=int, default=25, help="steps per interleaved timed chunk")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    p.add_argument("--device", default="cpu", help="torch device for both learners")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "rl_cql_speed.json",
        help="JSON path; the Markdown table goes next to it",
    )
    return p.parse_args(argv)


def make_data(args: argparse.Namespace) -> Trajectories:
    """Random states, uniform actions, Gaussian rewards; each episode ends in a terminal state."""
    rng = np.random.default_rng(args.seed)
    n, length = args.transitions, args.episode_len
    n -= n % length
    done = np.zeros(n, bool)
    done[length - 1 :: length] = True
    return Trajectories(
        obs=rng.normal(size=(n, args.obs_dim)).astype(np.float32),
        action=rng.integers(0, args.actions, n),
        reward=rng.normal(size=n).astype(np.float32),
        done=done,
        timeout=np.zeros(n, bool),
        patient=np.repeat(np.arange(n // length), length),
        time=np.tile(np.arange(length, dtype=np.float64), n // length),
        n_actions=args.actions,
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Ours:
    name = "clinfuse QLearner"

    def __init__(self, traj: Trajectories, args: argparse.Namespace) -> None:
        config = QConfig(
            hidden=tuple(args.hidden),
            dueling=False,
            double=True,
            cql_alpha=1.0,
            gamma=0.99,
            lr=1e-4,
            batch_size=args.batch,
            target_update="hard",
            target_every=1000,
            grad_clip=10.0,
            huber=True,
            seed=args.seed,
            device=args.device,
            progress=False,
            log_every=10**9,
        )
        self.traj = traj
        self.learner = QLearner(config, traj.obs_dim, traj.n_actions)
        self.device = args.device

    def run(self, steps: int) -> dict[str, float]:
        sync(self.device)
        t0 = time.perf_counter()
        history = self.learner.fit(self.traj, steps=steps)
        sync(self.device)
        total = time.perf_counter() - t0
        return {"time_s": total, "steps_per_s": steps / total, "loss": history[-1]["loss"]}


class D3rlpy:
    name = "d3rlpy DiscreteCQL"

    def __init__(self, traj: Trajectories, args: argparse.Namespace) -> None:
        import d3rlpy  # noqa: PLC0415 - optional dependency

        self.version = d3rlpy.__version__
        self.dataset = d3rlpy.dataset.MDPDataset(
            observations=traj.obs,
            actions=traj.action,
            rewards=traj.reward,
            terminals=traj.done.astype(np.float32),
            timeouts=traj.timeout.astype(np.float32),
            action_space=d3rlpy.constants.ActionSpace.DISCRETE,
            action_size=traj.n_actions,
        )
        config = d3rlpy.algos.DiscreteCQLConfig(
            learning_rate=1e-4,
            optim_factory=d3rlpy.optimizers.AdamFactory(clip_grad_norm=10.0),
            encoder_factory=d3rlpy.models.VectorEncoderFactory(hidden_units=list(args.hidden)),
            batch_size=args.batch,
            gamma=0.99,
            n_critics=1,
            target_update_interval=1000,
            alpha=1.0,
        )
        device = "cpu:0" if args.device == "cpu" else args.device
        self.algo = config.create(device=device)
        self.algo.build_with_dataset(self.dataset)
        self.batch = args.batch
        self.device = args.device

    def run(self, steps: int) -> dict[str, float]:
        sample_s = 0.0
        loss: dict[str, float] = {}
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            t1 = time.perf_counter()
            batch = self.dataset.sample_transition_batch(self.batch)
            sample_s += time.perf_counter() - t1
            loss = self.algo.update(batch)
        sync(self.device)
        total = time.perf_counter() - t0
        return {
            "time_s": total,
            "steps_per_s": steps / total,
            "sample_share": sample_s / total,
            "loss": float(loss.get("loss", float("nan"))),
        }


def to_markdown(payload: dict[str, Any]) -> str:
    m, c, r = payload["machine"], payload["config"], payload["results"]
    lines = [
        "# Discrete CQL training speed: clinfuse QLearner vs d3rlpy DiscreteCQL",
        "",
        f"Data: {c['transitions']} transitions, obs dim {c['obs_dim']}, {c['actions']} actions; "
        f"MLP {c['hidden']}, batch {c['batch']}; {c['steps']} timed steps each after "
        f"{c['warmup']} warm-up, interleaved in chunks of {c['chunk']}; device {c['device']}.",
        "",
        "| learner | steps/s | median over chunks | time [s] | note |",
        "|---|---|---|---|---|",
    ]
    for name, res in r.items():
        if res.get("skipped"):
            lines.append(f"| {name} | - | - | - | {res['skipped']} |")
            continue
        note = ""
        if "sample_share" in res["chunks"][0]:
            share = np.mean([x["sample_share"] for x in res["chunks"]])
            note = f"batch sampling {100 * share:.0f}% of the step time"
        lines.append(
            f"| {name} | {res['steps_per_s']:.1f} | {res['median_chunk_steps_per_s']:.1f} | "
            f"{res['time_s']:.1f} | {note} |"
        )
    ratio = payload["ratio_ours_over_d3rlpy"]
    lines += [
        "",
        f"**Ratio ours / d3rlpy: {ratio:.2f}x** (goal >= {GOAL}x: "
        f"{'met' if payload['goal_met'] else 'missed'}); median of the ratios of adjacent "
        f"chunks (robust to load spikes): {payload['median_paired_chunk_ratio']:.2f}x."
        if ratio is not None
        else "**Ratio: not measured** (d3rlpy is not installed).",
        "",
        describe(m)
        + (f"; d3rlpy {payload['d3rlpy_version']}." if payload["d3rlpy_version"] else "."),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    traj = make_data(args)
    runners: dict[str, Any] = {"ours": Ours(traj, args)}
    skipped: dict[str, str] = {}
    try:
        runners["d3rlpy"] = D3rlpy(traj, args)
    except ImportError as exc:
        skipped["d3rlpy"] = f"d3rlpy is not installed ({exc}); pip install d3rlpy to compare"
        print(f"note: {skipped['d3rlpy']}; timing our learner alone", file=sys.stderr)

    for runner in runners.values():
        runner.run(args.warmup)
    # interleave short chunks: a machine shared with other jobs then slows both learners alike
    chunks: dict[str, list[dict[str, float]]] = {k: [] for k in runners}
    sizes = [args.chunk] * (args.steps // args.chunk) + [args.steps % args.chunk]
    for size in [s for s in sizes if s]:
        for key, runner in runners.items():
            chunks[key].append({"steps": size, **runner.run(size)})

    results: dict[str, Any] = {}
    for key, runner in runners.items():
        total_s = sum(c["time_s"] for c in chunks[key])
        results[runner.name] = {
            "steps": args.steps,
            "time_s": total_s,
            "steps_per_s": args.steps / total_s,
            "median_chunk_steps_per_s": float(np.median([c["steps_per_s"] for c in chunks[key]])),
            "chunks": chunks[key],
        }
    for key, why in skipped.items():
        results[key] = {"skipped": why}
    ratio = paired_ratio = None
    if "d3rlpy" in runners:
        ratio = results[Ours.name]["steps_per_s"] / results[D3rlpy.name]["steps_per_s"]
        paired = [
            a["steps_per_s"] / b["steps_per_s"]
            for a, b in zip(chunks["ours"], chunks["d3rlpy"], strict=True)
        ]
        paired_ratio = float(np.median(paired))
    machine["loadavg_1_5_15_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    payload = {
        "benchmark": "rl_cql_speed",
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "d3rlpy_version": runners["d3rlpy"].version if "d3rlpy" in runners else None,
        "results": results,
        "ratio_ours_over_d3rlpy": ratio,
        "median_paired_chunk_ratio": paired_ratio,
        "goal": GOAL,
        "goal_met": None if ratio is None else bool(ratio >= GOAL),
    }
    markdown = to_markdown(payload)
    atomic_write_json(args.out, payload)
    atomic_write_text(args.out.with_suffix(".md"), markdown)
    print(markdown)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
