"""`clinfuse ls | fit | evaluate | predict | sweep | demo`: a thin layer over clinfuse.api."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from clinfuse.core.errors import ClinfuseError, ConfigError

log = logging.getLogger("clinfuse")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "clean"


def _fmt_metrics(metrics: dict) -> str:
    return "\n".join(
        f"  {k:<24} {v:.4f}" if isinstance(v, float) else f"  {k:<24} {v}"
        for k, v in metrics.items()
    )


def cmd_ls(args: argparse.Namespace) -> int:
    from clinfuse.api import get_method
    from clinfuse.builders import load_all as load_builders
    from clinfuse.core.builder import BUILDERS
    from clinfuse.core.config import describe, preset_names
    from clinfuse.core.learner import METHODS
    from clinfuse.methods import load_all

    load_all()
    load_builders()
    if args.name is None:
        print("methods:")
        for name, cls in METHODS.items():
            print(f"  {name:<12} {cls.description}  [presets: {', '.join(preset_names(name))}]")
        print("builders:")
        for name, bcls in BUILDERS.items():
            print(f"  {name:<12} {bcls.description}  [presets: {', '.join(preset_names(name))}]")
        print("\n`clinfuse ls NAME` lists a system's config fields (for --set key=value).")
        return 0
    cls = BUILDERS.get(args.name) if args.name in BUILDERS.names() else get_method(args.name)
    print(f"{args.name}: {cls.description}\npaper: {cls.paper}")
    print(f"presets: {', '.join(preset_names(args.name))}\nconfig fields (--set key=value):")
    for fname, tname, default, doc in describe(cls.config_cls):
        print(f"  {fname} = {default!r}  ({tname})\n      {doc}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import os

    from clinfuse.api import run
    from clinfuse.core import trackers

    with trackers.requested(args.log_with) as request:
        learner, rd = run(
            args.name,
            preset=args.preset,
            config_file=args.config,
            overrides=args.set or [],
            data=args.data,
            out=args.out,
            resume=args.resume,
        )
        if request is not None and int(os.environ.get("RANK", "0")) == 0:
            request.finish(rd)
            print(f"{', '.join(request.names)} logs written inside {rd.path}")
    metrics = rd.read_metrics()
    shown = {k: v for k, v in metrics.items() if k.startswith("test_")}
    table = learner.report_table()
    if table:
        print(table)
    elif shown:
        print(f"test metrics:\n{_fmt_metrics(shown)}")
    print(f"results written to {rd.path}")
    return 0


def _load(args: argparse.Namespace):
    from clinfuse.api import load

    learner = load(args.run, args.name)
    data = learner.load_data(args.data)
    return learner, data


def cmd_evaluate(args: argparse.Namespace) -> int:
    from clinfuse.core.runs import RunDir, atomic_write_json

    learner, data = _load(args)
    metrics = learner.evaluate(data, args.split, corrupt=args.corrupt)
    out = (
        RunDir(args.run).path
        / "evaluations"
        / f"{args.split}-{_slug(args.corrupt or 'clean')}.json"
    )
    atomic_write_json(out, {"split": args.split, "corrupt": args.corrupt, "metrics": metrics})
    shown = learner.report_table() or _fmt_metrics(metrics)
    print(f"{args.name} on {args.split} ({args.corrupt or 'clean'}):\n{shown}")
    folder = out.with_suffix("")
    if learner.write_report(folder):
        print(f"tables and plots written to {folder}")
    if args.arena:
        table, paths = learner.arena(folder / "arena")
        print(f"Report Arena leaderboard:\n{table}")
        print(f"arena tables and plot written to {paths[0].parent if paths else out.parent}")
    print(f"results written to {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from clinfuse.core.runs import RunDir

    learner, data = _load(args)
    if args.explain:
        df = learner.predict_explained(data, args.split)
        for _, row in df.head(args.show).iterrows():
            print(f"{row['head']} {row['relation']} ? (answer {row['answer']}):")
            for part in str(row["explanation"]).split(" | "):
                print(f"    {part}")
    else:
        df = learner.predict(data, args.split)
    path = RunDir(args.run).write_predictions(df, name=f"predictions-{args.split}")
    print(f"{len(df)} predictions written to {path}")
    folder = Path(args.run) / f"predictions-{args.split}"
    written = learner.write_prediction_report(data, args.split, folder, n_cases=args.show)
    if written:  # per-case figures (dpsurv: curve with band, assignment map, bars)
        print(f"{len(written)} per-case figures for {args.show} cases written to {folder}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from clinfuse.core.runs import RunDir
    from clinfuse.robustness.sweep import sweep_severities, write_sweep

    learner, data = _load(args)
    kind, _, mods = args.corrupt.partition(":")

    def evaluate(severity: float | None) -> dict[str, float]:
        spec = None if severity is None else f"{kind}:{mods}:{severity}"
        return learner.evaluate(data, args.split, corrupt=spec)

    df = sweep_severities(evaluate, args.severities)
    paths = write_sweep(
        df,
        RunDir(args.run).path / "sweeps",
        _slug(f"{args.split}-{args.corrupt}"),
        title=f"{args.name}: {args.corrupt} ({args.split})",
    )
    piv = df.pivot(index="metric", columns="severity", values="delta")
    print(f"clean minus corrupted, per metric and severity:\n{piv.to_string(float_format='%.4f')}")
    print("results written to " + ", ".join(str(p) for p in paths))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from clinfuse.api import build

    overrides = list(args.set or [])
    if args.executor:
        overrides.append(f"executor={args.executor}")
    _, card, rd = build(
        args.name,
        preset=args.preset,
        config_file=args.config,
        overrides=overrides,
        data=args.data,
        out=args.out,
        resume=args.resume,
    )
    print(f"{card.n_records} records built, {card.n_skipped} already done, {card.n_failed} failed")
    print(f"data set written to {rd.path} (card: {rd.path / 'dataset_card.md'})")
    if card.n_records == 0 and card.n_failed > 0:
        print(
            f"clinfuse: error: no record of {args.name} was built ({card.n_failed} failed)\n"
            f"  fix:      read the reasons in {rd.path / 'dataset_card.md'} (and failures.json)",
            file=sys.stderr,
        )
        return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from clinfuse.report.demo import run_demo

    report = run_demo(args.names or None, out=args.out, progress=not args.quiet)
    print(f"demo report written to {report}")
    site = Path(report).parent / "site" / "index.html"
    if site.is_file():
        print(f"browse every run and data set: open {site.resolve().as_uri()} in a browser")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from clinfuse.report.view import build_site, make_server

    index = build_site(args.path, args.out)
    print(f"site written to {index.parent}; open {index.as_uri()} in a browser")
    if args.serve:
        # serve the viewed folder when the site lies inside it (the pages link its images)
        root = Path(args.path).resolve()
        base = root if index.parent.is_relative_to(root) else index.parent
        server = make_server(base, args.port)
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        print(f"serving {base} read-only at {url}{index.relative_to(base).as_posix()} (Ctrl-C)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clinfuse", description="clinfuse: multimodal clinical AI methods, one toolkit."
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ls", help="list methods, or one method's config fields")
    s.add_argument("name", nargs="?")
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("fit", help="train a method; writes a run directory")
    s.add_argument("name")
    s.add_argument("--preset", help="a preset of configs/NAME (default: quick)")
    s.add_argument("--config", help="a TOML file (flat key = value; may set base = PRESET)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    s.add_argument("--data", help="data path (else the config's `data`, e.g. a synthetic preset)")
    s.add_argument("--out", help="run directory (default runs/NAME/<time>-<preset>)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument(
        "--log-with",
        metavar="TRACKER",
        help="also log config and per-epoch metrics to tensorboard, mlflow or wandb (offline), "
        "inside the run folder; several: tensorboard,mlflow",
    )
    s.set_defaults(func=cmd_fit)

    for cmd, helptext, func in (
        ("evaluate", "evaluate a trained run, optionally under a corruption", cmd_evaluate),
        ("predict", "write predictions of a trained run", cmd_predict),
        ("sweep", "evaluate a run under a corruption at several severities", cmd_sweep),
    ):
        s = sub.add_parser(cmd, help=helptext)
        s.add_argument("name")
        s.add_argument("--run", required=True, help="a run directory written by `clinfuse fit`")
        s.add_argument("--data", help="data path (default: the data the run was trained on)")
        s.add_argument("--split", default="test")
        if cmd == "evaluate":
            s.add_argument("--corrupt", help="e.g. gaussian:audio,vision:0.5 or drop:vision")
            s.add_argument("--arena", action="store_true", help="also run Report Arena (deepmedix)")
        if cmd == "predict":
            s.add_argument("--explain", action="store_true", help="top paths and rules (tunsr)")
            s.add_argument(
                "--show",
                type=int,
                default=5,
                help="explanations printed (tunsr), cases drawn (dpsurv)",
            )
        if cmd == "sweep":
            s.add_argument(
                "--corrupt", required=True, help="KIND:MODALITIES, e.g. gaussian:audio,vision"
            )
            s.add_argument(
                "--severities", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0, 2.0]
            )
        s.set_defaults(func=func)

    s = sub.add_parser("build", help="build a data set (resumable); writes a build directory")
    s.add_argument("name")
    s.add_argument("--preset", help="a preset of configs/NAME (default: quick)")
    s.add_argument("--config", help="a TOML file (flat key = value; may set base = PRESET)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    s.add_argument("--data", help="input records (else the config's `data`: the embedded default)")
    s.add_argument("--out", help="build directory (default builds/NAME/<time>)")
    s.add_argument("--resume", action="store_true", help="continue the build in --out")
    s.add_argument("--executor", choices=["process", "ray", "serial"], help="where records run")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("demo", help="run every system's quick preset and write one report")
    s.add_argument("names", nargs="*", help="systems to run (default: all)")
    s.add_argument("--out", default=None, help="report directory (default runs/demo/<time>)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("view", help="write a static HTML site of a run, build or demo folder")
    s.add_argument("path", help="a folder written by clinfuse fit, build or demo")
    s.add_argument("--out", help="site folder (default PATH/site)")
    s.add_argument("--serve", action="store_true", help="then serve it read-only on 127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="port of --serve (0: any free port)")
    s.set_defaults(func=cmd_view)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.quiet:
        os.environ["CLINFUSE_PROGRESS"] = "0"
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:  # `clinfuse ls | head -1`: stop quietly, as other Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        print("clinfuse: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as exc:  # noqa: BLE001 - only known failures become messages
        error = known_failure(exc, args)
        if error is None:
            raise
        print(f"clinfuse: error: {error}", file=sys.stderr)
        return 2


def known_failure(exc: BaseException, args: argparse.Namespace) -> ClinfuseError | None:
    """The clean error a user-caused failure stands for, or None for a genuine bug (which keeps
    its traceback): every :class:`ClinfuseError`, running out of memory (a model or batch too
    large for this machine), and an unknown ``--split``.

    Example:
        >>> ns = argparse.Namespace(split="dev")
        >>> str(known_failure(KeyError("dev"), ns)).splitlines()[0]
        "unknown split 'dev'"
        >>> known_failure(ZeroDivisionError(), ns) is None
        True
    """
    if isinstance(exc, ClinfuseError):
        return exc
    text = str(exc)
    oom = (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or (
            isinstance(exc, RuntimeError)
            and any(
                w in text for w in ("out of memory", "can't allocate memory", "not enough memory")
            )
        )
    )
    if oom:
        return ClinfuseError(
            "out of memory",
            expected="a model and batch that fit this machine's memory",
            found=f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}",
            fix="lower hidden / layers / batch_size (clinfuse ls NAME lists the fields), or use "
            "a machine with more memory",
        )
    split = getattr(args, "split", None)
    if isinstance(exc, KeyError) and split is not None and exc.args == (split,):
        return ConfigError(
            f"unknown split {split!r}",
            expected="a split of the data, such as train | valid | test",
            found=repr(split),
            fix="--split test",
        )
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
