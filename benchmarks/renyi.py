"""Benchmark: exact vs low-rank (exact / Lanczos / randomized) matrix-based Renyi entropy.

For each n: Gaussian data in ``--dim`` dimensions, a Gaussian Gram matrix with the kNN bandwidth,
then the best-of-``--repeats`` time and the error in bits of

* ``exact_H``: the full-spectrum :math:`H_\\alpha` (``eigvalsh``), error against float64 :math:`H`;
* ``exact_Hk``: :math:`H_\\alpha^k` from the exact spectrum;
* ``lanczos_Hk``, ``randomized_q1_Hk``, ``randomized_q2_Hk``: :math:`H_\\alpha^k` from Lanczos and
  from the randomized range finder with 1 and 2 power steps,

each low-rank error taken against the exact :math:`H_\\alpha^k` computed in float64 from the full
spectrum. The speed-up of interest is ``time(exact_Hk) / time(randomized_q1_Hk)``. Every repeat of
a randomized estimator uses a different seed, and the error reported is the worst over repeats.

Usage::

    .venv/bin/python benchmarks/renyi.py                     # n = 64 ... 4096 on the CPU
    .venv/bin/python benchmarks/renyi.py --quick             # n = 64, 256, one repeat
    .venv/bin/python benchmarks/renyi.py --device cuda --dtype float32

Writes ``benchmarks/results/renyi_<device>.json`` (atomically) and a log-log PNG next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path)
from clinfuse.info import gaussian_gram, knn_sigma, renyi_entropy

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096], help="values of n"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed calls per estimator (best is kept)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64", help="dtype of the Gram")
    p.add_argument("--alpha", type=float, default=1.9, help="Renyi order (DIB uses 1.9)")
    p.add_argument("--rank", type=int, default=10, help="k, eigenvalues kept by H^k")
    p.add_argument("--dim", type=int, default=50, help="feature dimension of the Gaussian data")
    p.add_argument("--k-nn", type=int, default=5, help="neighbours for the kNN bandwidth")
    p.add_argument("--oversample", type=int, default=10, help="extra sketch columns (randomized)")
    p.add_argument("--steps", type=int, default=None, help="Lanczos steps (default max(2k+1,k+30))")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: as is)"
    )
    p.add_argument("--backward", action="store_true", help="time forward + backward to the Gram")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON path (renyi_<device>.json)")
    p.add_argument("--quick", action="store_true", help="n = 64, 256 and one repeat (smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [64, 256], 1
    if args.out is None:
        args.out = Path(__file__).resolve().parent / "results" / f"renyi_{args.device}.json"
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_best(fn: Callable[[int], float], repeats: int, device: torch.device) -> dict[str, Any]:
    """Call ``fn(repeat_index)`` once untimed, then ``repeats`` times; keep all times and values."""
    fn(-1)
    sync(device)
    times, values = [], []
    for r in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        v = fn(r)
        sync(device)
        times.append(time.perf_counter() - t0)
        values.append(v)
    return {"time_s": min(times), "times_s": times, "values": values}


def bench_size(n: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    dtype = DTYPES[args.dtype]
    gen = torch.Generator().manual_seed(args.seed + n)
    x = torch.randn(n, args.dim, generator=gen, dtype=torch.float64).to(device)
    sync(device)
    t0 = time.perf_counter()
    sigma = knn_sigma(x, args.k_nn)
    gram64 = gaussian_gram(x, sigma)
    sync(device)
    gram_time = time.perf_counter() - t0

    # references: float64 full spectrum, once
    lam = torch.linalg.eigvalsh(gram64)
    ref_h = renyi_entropy(gram64, args.alpha).item()
    ref_hk = renyi_entropy(gram64, args.alpha, rank=args.rank).item()
    gram = gram64.to(dtype)
    del gram64

    def make(rank: int | None, solver: str, **opts: Any) -> Callable[[int], float]:
        def call(r: int) -> float:
            g = torch.Generator(device=device).manual_seed(args.seed + 1000 * (r + 1))
            a = gram.detach().requires_grad_(args.backward)
            h = renyi_entropy(a, args.alpha, rank, solver, generator=g, **opts)  # type: ignore[arg-type]
            if args.backward:
                h.backward()
            return h.item()

        return call

    estimators: dict[str, tuple[Callable[[int], float], float]] = {
        "exact_H": (make(None, "exact"), ref_h),
        "exact_Hk": (make(args.rank, "exact"), ref_hk),
        "lanczos_Hk": (make(args.rank, "lanczos", steps=args.steps), ref_hk),
        "randomized_q1_Hk": (
            make(args.rank, "randomized", n_iter=1, oversample=args.oversample),
            ref_hk,
        ),
        "randomized_q2_Hk": (
            make(args.rank, "randomized", n_iter=2, oversample=args.oversample),
            ref_hk,
        ),
    }
    out: dict[str, Any] = {
        "n": n,
        "sigma": sigma.item(),
        "gram_time_s": gram_time,
        "H_exact_bits": ref_h,
        "Hk_exact_bits": ref_hk,
        "top_eigenvalues": (lam.flip(0)[: args.rank] / lam.sum()).tolist(),
        "estimators": {},
    }
    for name, (fn, ref) in estimators.items():
        res = time_best(fn, args.repeats, device)
        errs = [v - ref for v in res["values"]]
        res["err_bits_max_abs"] = max(abs(e) for e in errs)
        res["err_bits_mean"] = sum(errs) / len(errs)
        out["estimators"][name] = res
    est = out["estimators"]
    out["speedup_exact_spectrum_over_randomized_q1"] = (
        est["exact_Hk"]["time_s"] / est["randomized_q1_Hk"]["time_s"]
    )
    out["speedup_exact_spectrum_over_randomized_q2"] = (
        est["exact_Hk"]["time_s"] / est["randomized_q2_Hk"]["time_s"]
    )
    out["speedup_exact_spectrum_over_lanczos"] = (
        est["exact_Hk"]["time_s"] / est["lanczos_Hk"]["time_s"]
    )
    return out


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write through a temporary file in the same folder, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ns = [r["n"] for r in results]
    for name in results[0]["estimators"]:
        ax.plot(ns, [r["estimators"][name]["time_s"] for r in results], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("n (samples)")
    ax.set_ylabel("time, best of repeats [s]")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120), mode="wb")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = machine_info(device)
    load = machine["loadavg_1_5_15"]
    if load is not None and device.type == "cpu" and load[0] > 0.5:
        hint = ""
        if torch.get_num_threads() > 1:
            hint = (
                f"; with {torch.get_num_threads()} threads a contended eigvalsh can slow down "
                "5-100x (try --threads 1)"
            )
        print(
            f"warning: the machine is busy (1-min load {load[0]:.1f}), timings are noisy{hint}",
            file=sys.stderr,
        )
    results = []
    header = f"{'n':>6} {'estimator':<18} {'time [ms]':>11} {'|err| [bits]':>13} {'value':>9}"
    print(header)
    for n in args.sizes:
        res = bench_size(n, args, device)
        results.append(res)
        for name, e in res["estimators"].items():
            print(
                f"{n:>6} {name:<18} {e['time_s'] * 1e3:>11.2f} {e['err_bits_max_abs']:>13.2e}"
                f" {e['values'][0]:>9.4f}"
            )
        print(
            f"{n:>6} speed-up exact spectrum / randomized q1: "
            f"{res['speedup_exact_spectrum_over_randomized_q1']:.1f}x"
        )
    last = results[-1]
    goal = {
        "n": last["n"],
        "target_speedup": 20.0,
        "target_err_bits": 0.01,
        "speedup": last["speedup_exact_spectrum_over_randomized_q1"],
        "err_bits": last["estimators"]["randomized_q1_Hk"]["err_bits_max_abs"],
    }
    goal["met"] = bool(goal["speedup"] >= 20.0 and goal["err_bits"] <= 0.01)
    machine["loadavg_1_5_15_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    payload = {
        "benchmark": "renyi",
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "goal_randomized_q1_at_largest_n": goal,
        "results": results,
    }
    if not all(math.isfinite(r["H_exact_bits"]) for r in results):
        print("warning: non-finite reference entropy", file=sys.stderr)
    out: Path = args.out
    atomic_write(out, lambda fh: json.dump(payload, fh, indent=2))
    png = out.with_suffix(".png")
    title = (
        f"Renyi H (alpha={args.alpha}, k={args.rank}, d={args.dim}, {args.dtype}) "
        f"on {machine['device_name']}"
    )
    plot(results, png, title)
    print(
        f"goal at n={goal['n']}: speed-up {goal['speedup']:.1f}x (>= 20), "
        f"error {goal['err_bits']:.2e} bits (<= 0.01): {'met' if goal['met'] else 'MISSED'}"
    )
    print(f"wrote {out}")
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
