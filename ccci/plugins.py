"""The plugin manager (pluggy), modelled on pytest's.

Plugins come from, in order:

1. builtins: the modules in :data:`BUILTIN_PLUGINS`, registered exactly like external
   plugins (``ccci plugins`` lists them with source ``builtin``);
2. the entry-point group ``ccci`` of installed distributions
   (``[project.entry-points.ccci] foo = "ccci_check_foo"``);
3. the fleet's local plugin file ``ccci_plugins.py`` next to ``ccci.toml`` (like a
   ``conftest.py``).

``CCCI_DISABLE_PLUGINS=a,b`` blocks plugins by name (a builtin's name is its module's
last component, e.g. ``stall``; an entry point's is its entry-point name). A builtin
module that declares ``CCCI_ESSENTIAL = True`` (process-death detection and the restart
remedy) cannot be disabled, by the environment or by the runner's five strikes. A plugin that fails to import, implements an unknown hook, or has a bad hook
signature is reported in one line (:attr:`CcciPluginManager.load_errors`) and skipped.
Functions named ``ccci_*`` count as hook implementations even without the
``@hookimpl`` marker (as pytest does for ``pytest_*``), so a misspelt hook name is caught.
Hook wrappers (``wrapper=True``, ``hookwrapper=True``) are refused at registration with
a one-line error: the runner calls every implementation on its own
(:mod:`ccci.calls`), so a wrapper would never wrap anything.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from ccci import hookspecs
from ccci.hookspecs import PROJECT_NAME

BUILTIN_PLUGINS: tuple[str, ...] = (
    "ccci.backends.scripted",
    "ccci.backends.claude",
    "ccci.backends.claude.claude_hooks",
    "ccci.backends.opencode",
    "ccci.backends.codex",
    "ccci.backends.gemini",
    "ccci.checks.process_death",
    "ccci.checks.fatal_error",
    "ccci.checks.context_limit",
    "ccci.checks.compact_before_limit",
    "ccci.checks.usage_limit",
    "ccci.checks.api_error",
    "ccci.checks.needs_input",
    "ccci.checks.stall",
    "ccci.checks.handoff",
    "ccci.checks.budget",
    "ccci.hooks.restart",
    "ccci.hooks.send",
    "ccci.hooks.wait",
    "ccci.hooks.escalate",
    "ccci.reporters.notify",
    "ccci.reporters.metrics",
    "ccci.reporters.states",
    "ccci.gitwatch",
    "ccci.usage_watch",
    "ccci.phases",
    "ccci.external",
    "ccci.jobs",
    "ccci.backends.opencode.opencode_serve",
)
LOCAL_PLUGIN_FILE = "ccci_plugins.py"
LOCAL_PLUGIN_NAME = "ccci_plugins"  #: the plugin name of a fleet's ccci_plugins.py
ENTRY_POINT_GROUP = "ccci"


@dataclass
class PluginInfo:
    """One registered plugin, for ``ccci plugins``."""

    name: str
    source: str  # "builtin", "entrypoint:<dist> <version>", "local:<path>", "registered"
    hooks: list[str]


class CcciPluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` for project ``ccci`` that records where each plugin
    came from and isolates broken ones."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        self.load_errors: list[str] = []
        self.disabled_requested: set[str] = set()
        #: plugin name -> why it is disabled (the environment, or the runner's strikes)
        self.disabled: dict[str, str] = {}
        self.essential: set[str] = set()
        #: bumped at every register/unregister (the call layer caches the call order)
        self.version = 0

    def register(self, plugin: Any, name: str | None = None) -> str | None:  # type: ignore[override]
        self.version += 1
        return super().register(plugin, name)

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:  # type: ignore[override]
        self.version += 1
        return super().unregister(plugin, name)

    def is_builtin(self, name: str) -> bool:
        """``True`` for a plugin registered from :data:`BUILTIN_PLUGINS`."""
        return self.sources.get(name) == "builtin"

    def is_essential(self, name: str) -> bool:
        """``True`` for a builtin that declares ``CCCI_ESSENTIAL = True``: never
        disabled, and its decisions cannot be overridden into nothing."""
        return name in self.essential

    def parse_hookimpl_opts(self, plugin: Any, name: str):  # type: ignore[override]
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("ccci_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                opts = {}
        return opts

    # ------------------------------------------------------------------ registering
    def register_checked(self, plugin: Any, name: str, source: str) -> bool:
        """Register ``plugin``; on a bad signature or unknown hook, report and skip.

        :returns: ``True`` when registered.
        """
        if self.is_blocked(name):
            return False
        was_registered = self.is_registered(plugin)
        try:
            self.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            if not was_registered and self.is_registered(plugin):
                # pluggy leaves a plugin that failed validation half-registered (its name,
                # and the hooks verified before the bad one): take it out completely
                self.unregister(plugin)
            self.load_errors.append(f"plugin {name} ({source}) skipped: {_one_line(exc)}")
            return False
        wrappers = sorted(hc.name for hc in self.get_hookcallers(plugin) or []
                          for impl in hc.get_hookimpls() if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper))
        if wrappers:
            self.unregister(plugin)
            self.load_errors.append(
                f"plugin {name} ({source}) skipped: hook wrappers are not supported ({', '.join(wrappers)}); "
                f"ccci calls each implementation on its own: use tryfirst/trylast instead"
            )
            return False
        unknown = [hc.name for hc in self.get_hookcallers(plugin) or [] if not hc.has_spec()]
        if unknown:
            self.unregister(plugin)
            self.load_errors.append(
                f"plugin {name} ({source}) skipped: unknown hook {', '.join(sorted(unknown))}; see ccci/hookspecs.py for the hook names"
            )
            return False
        self.sources[name] = source
        return True

    def block_from_env(self, environ: dict[str, str] | None = None) -> None:
        """Apply ``CCCI_DISABLE_PLUGINS`` (comma-separated names)."""
        env = os.environ if environ is None else environ
        for raw in env.get("CCCI_DISABLE_PLUGINS", "").split(","):
            name = raw.strip()
            if not name:
                continue
            short = name.rsplit(".", 1)[-1]
            self.disabled_requested.add(short)
            self.disabled[short] = "CCCI_DISABLE_PLUGINS"
            self.set_blocked(short)

    def load_builtins(self) -> None:
        for modname in BUILTIN_PLUGINS:
            short = modname.rsplit(".", 1)[-1]
            mod = importlib.import_module(modname)
            if getattr(mod, "CCCI_ESSENTIAL", False) is True:
                self.essential.add(short)
                if self.is_blocked(short):
                    self.unblock(short)
                    self.disabled_requested.discard(short)
                    self.disabled.pop(short, None)
                    self.load_errors.append(f"plugin {short} cannot be disabled: it is essential "
                                            f"(process-death detection and restart)")
            if self.is_blocked(short):
                continue
            self.register_checked(mod, short, "builtin")

    def load_entrypoints(self) -> None:
        """Load the ``ccci`` entry-point group; failures are reported and skipped."""
        try:
            eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        except Exception as exc:  # pragma: no cover - broken metadata
            self.load_errors.append(f"entry points unreadable: {_one_line(exc)}")
            return
        for ep in eps:
            if self.is_blocked(ep.name) or self.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            source = f"entrypoint:{dist.name} {dist.version}" if dist else "entrypoint"
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin must never stop ccci
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.load_errors.append(f"plugin {ep.name} ({source}) skipped: import failed: {_one_line(exc)}")
                continue
            self.register_checked(plugin, ep.name, source)

    def load_local(self, fleet_root: Path) -> None:
        """Load ``<fleet_root>/ccci_plugins.py`` if present."""
        path = fleet_root / LOCAL_PLUGIN_FILE
        if not path.is_file():
            return
        name = LOCAL_PLUGIN_NAME
        if self.is_blocked(name):
            return
        modname = f"ccci_local_plugins_{abs(hash(str(path)))}"
        try:
            spec = importlib.util.spec_from_file_location(modname, path)
            assert spec and spec.loader
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            spec.loader.exec_module(mod)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.load_errors.append(f"plugin {name} (local:{path}) skipped: import failed: {_one_line(exc)}")
            return
        self.register_checked(mod, name, f"local:{path}")

    # ------------------------------------------------------------------ listing
    def describe(self) -> list[PluginInfo]:
        """Every registered plugin with its source and implemented hooks."""
        out = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(hc.name for hc in self.get_hookcallers(plugin) or [])
            out.append(PluginInfo(name=name, source=self.sources.get(name, "registered"), hooks=hooks))
        return out

    def disable(self, name: str, reason: str = "disabled at run time") -> bool:
        """Unregister a plugin at run time (the runner does this after 5 failing ticks).

        :returns: ``False`` for essential plugins, which stay.
        """
        if self.is_essential(name):
            return False
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self.set_blocked(name)
        self.disabled[name] = reason
        return True


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


def get_plugin_manager(
    fleet_root: Path | None = None,
    environ: dict[str, str] | None = None,
    entrypoints: bool = True,
    extra: list[tuple[Any, str]] | None = None,
) -> CcciPluginManager:
    """Build the plugin manager: builtins, entry points, then the fleet's local file.

    :param fleet_root: fleet directory holding an optional ``ccci_plugins.py``.
    :param environ: environment for ``CCCI_DISABLE_PLUGINS`` (default ``os.environ``).
    :param entrypoints: load the ``ccci`` entry-point group.
    :param extra: ``(plugin, name)`` pairs registered last (tests use this).
    """
    pm = CcciPluginManager()
    pm.block_from_env(environ)
    pm.load_builtins()
    if entrypoints:
        pm.load_entrypoints()
    if fleet_root is not None:
        pm.load_local(Path(fleet_root))
    for plugin, name in extra or []:
        pm.register_checked(plugin, name, "registered")
    return pm


def collect_backends(pm: CcciPluginManager) -> dict[str, Any]:
    """Call ``ccci_register_backends`` and index the backends by name.

    A duplicate name is reported in ``pm.load_errors`` and the later one skipped.
    """
    out: dict[str, Any] = {}
    for impl in pm.hook.ccci_register_backends.get_hookimpls():
        try:
            result = impl.function()
        except Exception as exc:  # noqa: BLE001
            pm.load_errors.append(f"plugin {impl.plugin_name}: ccci_register_backends failed: {_one_line(exc)}")
            continue
        for backend in result or []:
            name = getattr(backend, "name", "")
            if not name:
                pm.load_errors.append(f"plugin {impl.plugin_name}: a backend has no name; set Backend.name")
            elif name in out:
                pm.load_errors.append(f"plugin {impl.plugin_name}: backend {name!r} already registered; skipped")
            else:
                try:
                    backend._ccci_plugin = impl.plugin_name  # who to name when one of its methods fails
                except AttributeError:
                    pass
                out[name] = backend
    return out
