"""Every hook specification is documented: when it is called, every parameter, the result."""
from __future__ import annotations

import inspect
import re

import pytest

from ccci import hookspecs
from ccci.hookspecs import PROJECT_NAME

SPECS = sorted(
    (name, fn) for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, f"{PROJECT_NAME}_spec")
)


def test_there_are_hookspecs():
    names = {name for name, _ in SPECS}
    assert {"ccci_check_agent", "ccci_check_fleet", "ccci_choose_remedy", "ccci_run_remedy",
            "ccci_report_event", "ccci_observe", "ccci_register_backends"} <= names


@pytest.mark.parametrize("name,fn", SPECS, ids=[n for n, _ in SPECS])
def test_hookspec_is_documented(name, fn):
    doc = inspect.getdoc(fn)
    assert doc, f"{name} has no docstring"
    first_paragraph = doc.split("\n\n")[0]
    assert re.search(r"\bcalled\b", first_paragraph, re.I), f"{name}: the docstring must start by saying when it is called"
    params = list(inspect.signature(fn).parameters)
    documented = re.findall(r":param (\w+):", doc)
    missing = [p for p in params if p not in documented]
    assert not missing, f"{name}: parameters without ':param name:': {missing}"
    extra = [p for p in documented if p not in params]
    assert not extra, f"{name}: ':param' for arguments the spec does not have: {extra}"
    assert ":returns:" in doc, f"{name}: no ':returns:'"
