"""Root conftest: ccci's own pytest plugin (:mod:`ccci.testing.pytest_plugin`) for this
repository's tests.

pytest normally loads the plugin through the ``pytest11`` entry point ``ccci`` of the
installed package. ``pytest_plugins = ["ccci.testing.pytest_plugin"]`` here would then
register the same module a second time under another name, which pluggy refuses
(``ValueError: Plugin already registered under a different name``). So it is registered
here only when the entry point did not load it (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``, or
the package is not installed); ``-p no:ccci`` is respected.
"""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]  # tests/unit/test_pytest_plugin.py runs pytest in pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    from ccci.testing import pytest_plugin

    pytest_plugin.register_once(config.pluginmanager, pytest_plugin, "ccci")


#: fixtures that run a :class:`ccci.supervisor.Supervisor` in the test's own process
#: (``pytester`` runs pytest in-process, and its tests use ``make_supervisor``)
_IN_PROCESS_SUPERVISOR = frozenset({"make_supervisor", "pytester"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """pytest-timeout's signal method (``timeout_method`` in pyproject.toml) arms SIGALRM
    with ``setitimer``; a Supervisor ticking in the test's process arms the same timer for
    ``check_timeout`` and disarms it after each check, which would silently cancel the
    test's limit. Those tests use the thread method, with the limit they already have."""
    for item in items:
        if "/tests/e2e/" in str(getattr(item, "path", "")).replace("\\", "/"):
            # pytest-xdist (addopts: -n 2 --dist loadgroup): the real agent CLIs run one
            # after another on one worker (two ~600 MB `opencode serve`, or two Node CLIs
            # racing their own hooks and transcripts, never at once), the rest on the other
            item.add_marker(pytest.mark.xdist_group("e2e"))
        if not _IN_PROCESS_SUPERVISOR.intersection(getattr(item, "fixturenames", ())):
            continue
        own = item.get_closest_marker("timeout")
        limit = (own.kwargs.get("timeout", own.args[0] if own.args else None)) if own else None
        kwargs = {"method": "thread"} if limit is None else {"timeout": limit, "method": "thread"}
        item.add_marker(pytest.mark.timeout(**kwargs), append=False)


@pytest.fixture
def golden_zone(monkeypatch: pytest.MonkeyPatch) -> str:
    """``TZ=UTC`` for reading golden screens: the recorded CLIs ran in UTC, and a reset
    shown as a local clock time without a zone (``retrying in 1s (7:01am)``) is read in
    the zone ccci's agents run in (:func:`ccci.clock.local_zone`, from ``$TZ``)."""
    monkeypatch.setenv("TZ", "UTC")
    return "UTC"


@pytest.fixture
def claude_on_path(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A ``claude`` executable (a script that exits 0) first on ``$PATH``, for tests of the
    claude backend that must not depend on a real Claude Code being installed."""
    import os

    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "claude"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '')}")
    return exe
