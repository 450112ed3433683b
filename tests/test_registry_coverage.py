"""Every registered method has a test folder (PyKEEN's rule: no component without a test)."""

from __future__ import annotations

from pathlib import Path

from clinfuse.core.learner import METHODS
from clinfuse.methods import load_all

TESTS = Path(__file__).resolve().parent


def test_every_method_has_tests() -> None:
    load_all()
    assert METHODS.names(), "no method registered"
    for name in METHODS.names():
        files = list((TESTS / name).glob("test_*.py"))
        assert files, f"method {name!r} is registered but tests/{name}/ has no test file"


def test_every_method_has_quick_preset_and_readme() -> None:
    from clinfuse.core.config import preset_names

    load_all()
    src = Path(__file__).resolve().parents[1] / "src" / "clinfuse" / "methods"
    for name, cls in METHODS.items():
        assert cls.demo_preset in preset_names(name), name
        assert (src / name / "README.md").is_file(), name


def test_every_builder_has_tests_quick_preset_and_readme() -> None:
    from clinfuse.builders import load_all as load_builders
    from clinfuse.core.builder import BUILDERS
    from clinfuse.core.config import preset_names

    load_builders()
    assert BUILDERS.names(), "no builder registered"
    src = Path(__file__).resolve().parents[1] / "src" / "clinfuse" / "builders"
    for name, cls in BUILDERS.items():
        assert list((TESTS / name).glob("test_*.py")), f"builder {name!r} has no tests/{name}/"
        assert cls.demo_preset in preset_names(name), name
        assert (src / name / "README.md").is_file(), name
