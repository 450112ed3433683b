"""The systems table of the top-level README, generated from the method and builder registries.

python -m clinfuse.report.systems      # prints the Markdown table
"""

from __future__ import annotations

import inspect
from pathlib import Path

import clinfuse

HEADER = "| name | paper | what it does | status | README |\n|---|---|---|---|---|"


def _readme(cls: type) -> str:
    """The repository path of the README beside the module that defines ``cls``."""
    module = Path(inspect.getfile(cls))
    rel = module.parent.relative_to(Path(clinfuse.__file__).parent)
    path = f"src/clinfuse/{rel.as_posix()}/README.md"
    return f"[{path}]({path})"


def systems_table() -> str:
    """One row per registered method, then per builder: name, paper, description, status and
    the method README (the ``paper``, ``description`` and ``status`` class attributes).

    Example:
        >>> systems_table().splitlines()[0]
        '| name | paper | what it does | status | README |'
    """
    from clinfuse.builders import load_all as load_builders
    from clinfuse.core.builder import BUILDERS
    from clinfuse.core.learner import METHODS
    from clinfuse.methods import load_all

    load_all()
    load_builders()
    rows = [HEADER]
    for kind, registry in (("", METHODS), (" (builder)", BUILDERS)):
        for name, cls in registry.items():
            cells = [f"`{name}`{kind}", cls.paper, cls.description, cls.status, _readme(cls)]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(systems_table())
