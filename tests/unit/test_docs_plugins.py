"""Every example in docs/plugins.md runs: each ``python`` block after an
``<!-- example: NAME -->`` marker is loaded as a module (``PLUGIN`` is the module
itself), and its ``test_*`` functions are called with the shipped fixtures they name."""
from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
EXAMPLE_RE = re.compile(r"<!-- example: (?P<name>[\w ]+) -->\n```python\n(?P<code>.*?)```", re.S)
EXAMPLES = [(m["name"], m["code"]) for m in EXAMPLE_RE.finditer(DOC.read_text(encoding="utf-8"))]


def test_the_doc_has_an_example_for_each_plugin_kind():
    assert [n for n, _ in EXAMPLES] == ["check", "remedy", "backend", "reporter", "state source"]


@pytest.mark.parametrize("name,code", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_runs(name, code, request):
    mod = types.ModuleType(f"docs_example_{name.replace(' ', '_')}")
    mod.__file__ = str(DOC)
    exec(compile(code, f"{DOC.name}:{name}", "exec"), mod.__dict__)
    mod.PLUGIN = mod
    tests = [fn for n, fn in vars(mod).items() if n.startswith("test_") and inspect.isfunction(fn)]
    assert tests, f"example {name!r} has no test_* function"
    for fn in tests:
        fn(**{arg: request.getfixturevalue(arg) for arg in inspect.signature(fn).parameters})
