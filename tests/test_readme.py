"""The README's commands run (fit commands with fewer epochs; the full demo is a slow test)."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest
from tests.conftest import TINY_FIT

from clinfuse.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
METHOD_READMES = sorted(
    [
        *(README.parent / "src/clinfuse/methods").glob("*/README.md"),
        *(README.parent / "src/clinfuse/builders").glob("*/README.md"),
    ]
)


def readme_commands(path: Path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8")
    cmds = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith(".venv/bin/clinfuse "):
            argv = shlex.split(line)[1:]
            cmds.append(argv)
    return cmds


#: methods without epochs: the overrides that make their fit a smoke run
SMOKE = {k: TINY_FIT[k] for k in ("procon", "deepmedix", "ehrprompt", "deepen")}


#: builders: the overrides that make their build a smoke run
BUILD_FAST = {
    "meeti": ["n_simulated=2", "executor=serial", "dpi=100", "progress=false"],
    "medbanana": ["executor=serial", "progress=false"],
}


def _shrink(argv: list[str]) -> list[str] | None:
    if argv[0] == "demo":
        return None  # covered by test_demo_report and the slow full demo
    if argv[0] == "build" and "--resume" not in argv:
        fast = BUILD_FAST.get(argv[1], ["progress=false"])
        return [*argv, *[x for o in fast for x in ("--set", o)]]
    if argv[0] == "fit" and argv[1] in SMOKE:
        smoke = [x for o in SMOKE[argv[1]] for x in ("--set", o)]
        return [*argv, *smoke, "--set", "progress=false"]
    if argv[0] == "fit":
        if "--resume" in argv:
            i = argv.index("--set") if "--set" in argv else None
            if i is not None and re.fullmatch(r"epochs=\d+", argv[i + 1]):
                del argv[i : i + 2]
            return [*argv, "--set", "epochs=3", "--set", "progress=false"]
        return [*argv, "--set", "epochs=2", "--set", "progress=false"]
    return argv


@pytest.mark.parametrize(
    "readme", [README, *METHOD_READMES], ids=["README", *(p.parent.name for p in METHOD_READMES)]
)
def test_readme_commands_run(readme: Path, tmp_path, monkeypatch, capsys) -> None:
    cmds = readme_commands(readme)
    assert any(c[0] in ("fit", "build") for c in cmds)
    monkeypatch.chdir(tmp_path)
    for argv in cmds:
        shrunk = _shrink(list(argv))
        if shrunk is None:
            continue
        rc = main(shrunk)
        out = capsys.readouterr()
        assert rc == 0, f"{argv}: {out.err[-2000:]}"
        if argv[0] in ("fit", "evaluate", "predict", "sweep", "build"):
            assert "written to" in out.out, argv  # every command says where its results went


TEMPLATE = (
    "Paper",
    "What it does",
    "Data formats",
    "Commands",
    "Outputs",
    "Evaluation protocol",
    "Results",
    "Inferred choices",
    "Limits",
)
"""The level-2 headings every method and builder README opens with, in this order (further
level-2 sections may follow them)."""

PENDING = {"dpsurv"}


def _registered() -> list[tuple[str, type]]:
    from clinfuse.builders import BUILDERS
    from clinfuse.builders import load_all as load_builders
    from clinfuse.methods import METHODS
    from clinfuse.methods import load_all as load_methods

    load_methods()
    load_builders()
    return [*METHODS.items(), *BUILDERS.items()]


REGISTERED = _registered()


def level2_headings(text: str) -> list[str]:
    """The ``## `` headings of a Markdown text, fenced code blocks skipped."""
    headings, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            headings.append(line[3:].strip())
    return headings


@pytest.mark.parametrize("name,cls", REGISTERED, ids=[n for n, _ in REGISTERED])
def test_method_readmes_follow_the_template(name: str, cls: type) -> None:
    if name in PENDING:
        pytest.skip(f"{name} README not yet in the template")
    readme = Path(inspect.getfile(cls)).parent / "README.md"
    assert readme.is_file(), f"{name}: no README.md beside {inspect.getfile(cls)}"
    headings = level2_headings(readme.read_text(encoding="utf-8"))
    assert tuple(headings[: len(TEMPLATE)]) == TEMPLATE, (
        f"{readme}: the first level-2 headings must be {list(TEMPLATE)} in this order "
        f"(extra sections go after them or as ### inside them); found {headings}"
    )


def test_demo_report(tmp_path) -> None:
    from clinfuse.report.demo import run_demo

    report = run_demo(
        ["dib", "deepen", "dpsurv", "meeti", "medbanana"],
        out=tmp_path / "demo",
        progress=False,
        overrides={
            "dib": ["epochs=2", "progress=false"],
            "deepen": SMOKE["deepen"],
            "dpsurv": ["epochs=2", "progress=false"],
            "meeti": BUILD_FAST["meeti"],
            "medbanana": BUILD_FAST["medbanana"],
        },
    )
    text = report.read_text()
    assert "| dib | synthetic_mosi_hard | test non0_acc2 |" in text
    assert "| deepen | simulator (100 admissions) | policy value (true_value) |" in text
    assert "| dpsurv | synthetic | test Harrell C |" in text
    assert "| meeti | default (2 simulated + packaged real records) |" in text
    assert "| medbanana | default (3 packaged real images" in text
    assert (tmp_path / "demo" / "report.html").is_file()
    for png in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (tmp_path / "demo" / png).is_file()


@pytest.mark.slow
def test_full_demo_of_dib(tmp_path) -> None:
    """`clinfuse demo dib` exactly as `make demo` runs it (the hard preset and its baseline)."""
    assert main(["demo", "dib", "--out", str(tmp_path / "demo")]) == 0


def test_systems_table_is_generated_from_the_registries() -> None:
    from clinfuse.report.systems import systems_table

    text = README.read_text(encoding="utf-8")
    assert systems_table() in text, (
        "README systems table is stale: paste the output of "
        "`python -m clinfuse.report.systems` under ## Systems"
    )
