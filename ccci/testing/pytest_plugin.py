"""ccci's pytest plugin: fixtures for testing ccci plugins (checks, remedies, backends).

Installing ccci registers this module with pytest through the ``pytest11`` entry point
``ccci``, so a plugin's tests can ask for these fixtures by name, with no conftest:

============== ==================================================================
fixture        gives
============== ==================================================================
fake_clock     :class:`ccci.clock.FakeClock`: monotonic seconds and UTC wall time
               that move only with ``advance(seconds)`` / ``jump_wall(seconds)``
fake_tmux      :class:`ccci.testing.fakes.FakeTmux`: fake panes keyed by session
fleet_config   factory: writes ``ccci.toml`` in ``tmp_path``, returns the loaded
               :class:`ccci.config.FleetConfig`
make_supervisor factory: a real :class:`ccci.supervisor.Supervisor` on the fakes,
               with your plugins registered
git_origin     :class:`ccci.testing.fakes.GitOrigin`: a bare origin and
               ``push_commit(subject) -> sha``
tmux_server    :class:`ccci.tmux.Tmux` on a private tmux socket (libtmux's
               ``server`` fixture); skipped when tmux is not installed
============== ==================================================================

Example (a check plugin that reports a marker on screen)::

    from ccci import Finding, hookimpl

    class MarkerCheck:
        @hookimpl
        def ccci_check_agent(self, agent, screen):
            if "HELP" in screen:
                return Finding("marker", agent.name, "asks for help", immediate=True)

    def test_marker(make_supervisor, fake_tmux, fake_clock):
        sup = make_supervisor(agents=["a"], plugins=[MarkerCheck()])
        fake_clock.advance(1)
        sup.tick()                              # the agent is back from its start
        fake_tmux.pane("a").append("HELP")
        fake_clock.advance(1)
        assert [f.check for f in sup.tick()] == ["marker"]

Times: every duration is in seconds. ``fake_clock.monotonic()`` starts at 1000.0 and
``fake_clock.now()`` at 2026-01-01T00:00:00Z; a tick does not move the clock, so advance
it between ticks (the supervisor needs 1 s after a (re)start to see the agent "back").
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ccci.clock import FakeClock
from ccci.testing.fakes import FakePane, FakeTmux, GitOrigin, toml_document

__all__ = ["FakePane", "FakeTmux", "GitOrigin", "register_once"]


def register_once(pluginmanager: pytest.PytestPluginManager, module: Any, name: str) -> bool:
    """Register a pytest plugin module unless it is already registered (under any
    name: an entry point registers it under the entry point's name) or blocked with
    ``-p no:<name>``.

    ``pytest_plugins = ["mod"]`` cannot be used for a module that may also come from an
    entry point: pluggy refuses the same module under a second name (``ValueError``).

    :returns: ``True`` when this call registered it.
    """
    if pluginmanager.is_registered(module) or pluginmanager.is_blocked(name) or pluginmanager.has_plugin(name):
        return False
    pluginmanager.register(module, name)
    return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tmux: needs a real tmux server (isolated socket)")
    # tmux_server builds on libtmux's `server` fixture; libtmux registers its plugin
    # through its own entry point, but not when plugin autoloading is off
    try:
        import libtmux.pytest_plugin as libtmux_plugin
    except ImportError:  # pragma: no cover - libtmux is a dependency of ccci
        return
    register_once(config.pluginmanager, libtmux_plugin, "libtmux")


# --------------------------------------------------------------------------- fakes


@pytest.fixture
def fake_clock() -> FakeClock:
    """A :class:`ccci.clock.FakeClock` shared by ``make_supervisor``'s supervisors.

    ``monotonic()`` is float seconds starting at 1000.0; ``now()`` is a UTC ``datetime``
    starting at 2026-01-01T00:00:00Z. ``advance(seconds)`` moves both; ``jump_wall(seconds)``
    moves only the wall clock (an NTP step; may be negative); ``sleep(seconds)`` advances
    instead of blocking (so :func:`ccci.send.deliver`'s waits take no real time).
    """
    return FakeClock()


@pytest.fixture
def fake_tmux() -> FakeTmux:
    """A :class:`ccci.testing.fakes.FakeTmux` (no tmux is run), shared by
    ``make_supervisor``'s supervisors.

    ``fake_tmux.pane("a")`` is agent ``a``'s live :class:`~ccci.testing.fakes.FakePane`
    (set ``screen``, call ``kill()``, ``busy()``, read ``submitted``);
    ``fake_tmux.launches("a")`` lists every pane ccci started for it (``argv``, ``env``);
    ``fake_tmux.on_new_session = callback(pane)`` draws a newly launched agent.
    """
    return FakeTmux()


@pytest.fixture
def fleet_config(tmp_path: Path) -> Callable[..., Any]:
    """Factory: write a ``ccci.toml`` into ``tmp_path`` and load it.

    ``fleet_config(agents=("a",), *, name="test", backend="scripted", checks=None,
    git=None, handoff=None, fleet=None, defaults=None, extra_toml="", root=None,
    environ=None) -> ccci.config.FleetConfig``

    :param agents: agent names (``str``) or ``[[agents]]`` tables (``dict`` with
        ``name``, ``role``, ``handoff_role``, ``backend``, ``options``, ``checks``...).
        Each agent's workdir (default ``<root>/work/<name>``) is created.
    :param name: fleet name; sessions are ``ccci-<name>-<agent>``.
    :param backend: ``[defaults] backend`` (default ``scripted``, ccci's own stand-in).
    :param checks: ``[checks]`` thresholds, seconds for durations (e.g.
        ``{"failure_threshold": 3, "startup_grace": 0}``); unset ones keep
        :data:`ccci.config.DEFAULT_CHECKS`.
    :param git: ``[git]`` table, e.g. ``{"origin": git_origin.url, "fetch_interval": 1}``.
    :param handoff: ``[[handoff]]`` tables (``prefix``, ``to``, ``message``).
    :param fleet: extra ``[fleet]`` keys (``tick_seconds``, ``state_dir``...).
    :param defaults: extra ``[defaults]`` keys (``model``...).
    :param extra_toml: raw TOML appended at the end (for tables not covered above).
    :param root: directory for ``ccci.toml`` (default ``tmp_path``; state in
        ``<root>/.ccci``).
    :param environ: environment for ``CCCI_BACKEND``/``CCCI_MODEL`` (default ``{}``:
        the developer's environment does not leak into tests).
    :raises ccci.config.ConfigError: when the resulting config is invalid.
    """
    from ccci import config as config_mod

    def factory(
        agents: Any = ("a",),
        *,
        name: str = "test",
        backend: str = "scripted",
        checks: dict[str, Any] | None = None,
        git: dict[str, Any] | None = None,
        handoff: list[dict[str, Any]] | None = None,
        fleet: dict[str, Any] | None = None,
        defaults: dict[str, Any] | None = None,
        extra_toml: str = "",
        root: Path | None = None,
        environ: dict[str, str] | None = None,
    ):
        base = Path(root) if root is not None else tmp_path
        base.mkdir(parents=True, exist_ok=True)
        tables = [a if isinstance(a, dict) else {"name": a} for a in agents]
        text = toml_document(
            {
                "fleet": {"name": name, **(fleet or {})},
                "defaults": {"backend": backend, **(defaults or {})},
                "checks": dict(checks or {}),
                "git": dict(git or {}),
            },
            {"agents": tables, "handoff": handoff or []},
        )
        if extra_toml:
            text += "\n" + extra_toml + "\n"
        path = base / config_mod.CONFIG_NAME
        path.write_text(text, encoding="utf-8")
        cfg = config_mod.load(path, environ={} if environ is None else environ)
        for spec in cfg.agents:
            spec.workdir.mkdir(parents=True, exist_ok=True)
        return cfg

    return factory


@pytest.fixture
def make_supervisor(
    fleet_config: Callable[..., Any], fake_tmux: FakeTmux, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Any]]:
    """Factory: a real :class:`ccci.supervisor.Supervisor` wired to the fakes.

    ``make_supervisor(config=None, *, plugins=(), start=True, environ=None, strict=True,
    **fleet_config_kwargs) -> ccci.supervisor.Supervisor``

    :param config: a :class:`ccci.config.FleetConfig`; default: ``fleet_config(**kwargs)``.
    :param plugins: your plugins, each an object/module or a ``(plugin, name)`` pair;
        registered after the builtins through
        ``ccci.plugins.get_plugin_manager(entrypoints=False, extra=[...])`` (installed
        entry-point plugins are not loaded, so tests are hermetic).
    :param start: do what ``ccci watch`` does before its first tick: call
        ``ccci_configure`` and :meth:`~ccci.supervisor.Supervisor.adopt` (agents without a
        live session are launched into the fake tmux; live ones are adopted).
    :param environ: environment for ``CCCI_DISABLE_PLUGINS`` (default ``{}``).
    :param strict: raise ``RuntimeError`` when one of ``plugins`` was skipped (unknown
        hook, bad signature); with ``False`` read ``sup.pm.load_errors`` instead.

    The supervisor uses ``fake_tmux``, ``fake_clock``, a
    :class:`ccci.state.StateStore` in the config's state dir (``<tmp_path>/.ccci``), and
    ``fake_tmux.scan_processes`` as its process scan (pids of live FakePanes are alive).
    Its process kills (:func:`ccci.processes.kill_tree`) only mark fake panes dead.
    Several supervisors can share one config (a watcher restart on the same state);
    each gets its own store connection; all are closed at teardown.

    ``sup.tick()`` runs one tick and returns its findings (before hysteresis); the
    events it stored are ``ccci.testing.fakes.events(sup, kind=None, agent=None)``: dicts
    (``id``, ``at`` as an ISO-8601 UTC string, ``agent``, ``kind``, ``message``, ``data``),
    the stored form of :class:`ccci.model.Event`, oldest first.
    """
    from ccci import processes as processes_mod
    from ccci import supervisor as supervisor_mod
    from ccci.plugins import get_plugin_manager
    from ccci.state import StateStore

    monkeypatch.setattr(processes_mod, "kill_tree", fake_tmux.kill_pid)
    made: list[Any] = []

    def factory(
        config: Any = None,
        *,
        plugins: Any = (),
        start: bool = True,
        environ: dict[str, str] | None = None,
        strict: bool = True,
        **fleet_kwargs: Any,
    ):
        if config is not None and fleet_kwargs:
            raise TypeError("pass either config or fleet_config arguments, not both")
        cfg = config if config is not None else fleet_config(**fleet_kwargs)
        extra = []
        for p in plugins:
            plugin, name = p if isinstance(p, tuple) else (p, getattr(p, "__name__", None) or f"{type(p).__name__}-{id(p):x}")
            extra.append((plugin, name))
        pm = get_plugin_manager(environ={} if environ is None else environ, entrypoints=False, extra=extra)
        if strict:
            skipped = [name for plugin, name in extra if not pm.is_registered(plugin)]
            if skipped:
                raise RuntimeError(f"plugin(s) {', '.join(skipped)} not registered: {'; '.join(pm.load_errors)}")
        store = StateStore(cfg.state_dir)
        sup = supervisor_mod.Supervisor(cfg, pm, store, fake_tmux, fake_clock, process_scan=fake_tmux.scan_processes)
        made.append((sup, start))
        if start:
            sup.configure()
            sup.adopt()
        return sup

    yield factory
    for sup, started in made:
        if started:
            try:
                sup.calls.call_all("ccci_unconfigure", {"config": sup.config})
            except Exception:  # noqa: BLE001 - teardown must not mask the test's result
                pass
        sup.store.close()


# --------------------------------------------------------------------------- real services


@pytest.fixture
def git_origin(tmp_path: Path) -> GitOrigin:
    """A :class:`ccci.testing.fakes.GitOrigin`: a bare repository at
    ``<tmp_path>/origin.git`` with one initial commit on ``main``, and a scratch clone.

    ``git_origin.url`` goes in ``[git] origin``; ``git_origin.push_commit("claim(step 1):
    ...")`` commits and pushes, returning the 40-hex sha; ``git_origin.head()`` is
    origin's branch head. Needs the ``git`` program.
    """
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    return GitOrigin(tmp_path)


@pytest.fixture
def tmux_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A :class:`ccci.tmux.Tmux` bound to a private tmux server (its own ``-L`` socket,
    from libtmux's ``server`` fixture), killed afterwards. Skipped when tmux is not
    installed.

    Use it to test a backend's launch command or a pattern file on a real pane::

        pane = tmux_server.new_session("t", ["sh", "-c", "echo hi; sleep 30"], None, {})
        text = tmux_server.capture([pane.pane_id])[pane.pane_id]
    """
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    from ccci.tmux import Tmux

    try:
        server = request.getfixturevalue("server")
    except pytest.FixtureLookupError:  # pragma: no cover - `-p no:libtmux`
        pytest.fail("tmux_server needs libtmux's pytest plugin (fixture 'server'); do not disable it with -p no:libtmux")
    tmux = Tmux(socket_name=server.socket_name)
    try:
        yield tmux
    finally:
        try:
            tmux.kill_server()
        except Exception:  # noqa: BLE001 - libtmux's finalizer reaps the socket too
            pass
