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
