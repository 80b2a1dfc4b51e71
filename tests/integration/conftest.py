"""Integration fixtures: real tmux (a private socket per fleet), real git, real
``ccci watch`` processes."""
from __future__ import annotations

import shutil

import pytest

from ccci.testing.fleet import Fleet, fleet_name

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@pytest.fixture
def fleet(tmp_path):
    """A fresh fleet (builder + adversary on the scripted backend, real bare origin),
    tmux server and watchers torn down afterwards."""
    f = Fleet(tmp_path / "fleet", fleet_name(tmp_path))
    yield f
    f.close()
