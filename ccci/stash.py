"""Plugin state: a stash per plugin and agent, with typed keys (the idea of pytest's
``Stash``/``StashKey``).

A plugin never keeps mutable state in module globals: two runners in one process would
share it, and a watcher restart would lose it. It asks for a stash instead, either as a
hook argument (``stash``: the calling plugin's stash for the hook's agent, or for the
fleet in fleet-wide hooks) or from ``services.stash(agent)``::

    from ccci import StashKey

    LAST_SEEN = StashKey[str]("last_seen", persist=True)   # survives a watcher restart
    SEEN_AT = StashKey[float]("seen_at")                    # this watcher process only

    @hookimpl
    def ccci_check_agent(agent, analysis, stash):
        stash[SEEN_AT] = stash.get(SEEN_AT, 0.0) + 1

Keys with ``persist=True`` are written through to the state database (SQLite, as JSON:
the value must be JSON-able) and read back after a watcher restart; other keys live in
memory for the life of the runner. Stashes of different plugins, agents and runners
never share a value.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from ccci.state import StateStore

T = TypeVar("T")
_MISSING = object()


class StashKey(Generic[T]):
    """A typed key of a :class:`Stash`.

    :param name: the key's name, unique within one plugin (``[A-Za-z0-9_.-]``; it is
        part of the database key of a persisted value).
    :param persist: write the value through to the state database (JSON-able values
        only) so it survives a watcher restart.
    :raises ValueError: on an empty name.
    """

    __slots__ = ("name", "persist")

    def __init__(self, name: str, persist: bool = False) -> None:
        if not name:
            raise ValueError("a StashKey needs a name")
        self.name = name
        self.persist = persist

    def __repr__(self) -> str:
        return f"StashKey({self.name!r}, persist={self.persist})"


class Stash:
    """One plugin's state for one agent (or for the fleet: ``agent`` ``None``).

    Mapping-like over :class:`StashKey` objects: ``stash[key]`` (``KeyError`` when
    unset), ``stash.get(key, default)``, ``stash[key] = value``, ``del stash[key]``,
    ``key in stash``, ``stash.setdefault(key, value)``.
    """

    def __init__(self, plugin: str, agent: str | None, memory: dict, store: "StateStore | None") -> None:
        self.plugin = plugin
        self.agent = agent
        self._memory = memory
        self._store = store

    def _db_key(self, key: StashKey) -> str:
        return f"stash.{self.plugin}.{self.agent or '-'}.{key.name}"

    def _load(self, key: StashKey) -> Any:
        """The value (memory first; a persisted key's first read asks the database and
        remembers the answer, a miss included), or ``_MISSING``.

        Remembering a miss (``_MISSING`` in memory) saves a SQLite read per agent per
        tick for a persisted key a check reads every tick and that is mostly unset (e.g.
        ``api_error``'s outage). Memory is this runner's word once loaded, for a miss as
        for a value: only this runner writes its stashes' keys."""
        if key.name in self._memory:
            return self._memory[key.name]
        if key.persist and self._store is not None:
            raw = self._store.get(self._db_key(key))
            if raw is not None:
                try:
                    value = json.loads(raw)
                except ValueError:
                    return _MISSING
                self._memory[key.name] = value
                return value
            self._memory[key.name] = _MISSING
        return _MISSING

    def __getitem__(self, key: StashKey[T]) -> T:
        value = self._load(key)
        if value is _MISSING:
            raise KeyError(key.name)
        return value

    def get(self, key: StashKey[T], default: T | None = None) -> T | None:
        """The value, or ``default`` when unset."""
        value = self._load(key)
        return default if value is _MISSING else value

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        if key.persist and self._store is not None:
            self._store.put(self._db_key(key), json.dumps(value, default=str))
        self._memory[key.name] = value

    def setdefault(self, key: StashKey[T], value: T) -> T:
        """The value when set, else set it to ``value`` and return that."""
        current = self._load(key)
        if current is _MISSING:
            self[key] = value
            return value
        return current

    def __delitem__(self, key: StashKey) -> None:
        found = self._memory.pop(key.name, _MISSING) is not _MISSING
        if key.persist and self._store is not None:
            found = self._store.delete(self._db_key(key)) or found
        if not found:
            raise KeyError(key.name)

    def pop(self, key: StashKey[T], default: T | None = None) -> T | None:
        """Remove the value and return it (``default`` when unset)."""
        value = self._load(key)
        if value is _MISSING:
            return default
        del self[key]
        return value

    def __contains__(self, key: StashKey) -> bool:
        return self._load(key) is not _MISSING


class Stashes:
    """Every stash of one runner: ``stashes.get(plugin, agent) -> Stash``."""

    def __init__(self, store: "StateStore | None") -> None:
        self._store = store
        self._memory: dict[tuple[str, str | None], dict] = {}
        self._views: dict[tuple[str, str | None], Stash] = {}

    def get(self, plugin: str, agent: str | None = None) -> Stash:
        """The stash of ``plugin`` for ``agent`` (``None``: the fleet). The same
        :class:`Stash` object each time (a view over the plugin's memory for that
        agent; built once instead of at every hook call: ~11 per agent per tick)."""
        key = (plugin, agent)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = Stash(plugin, agent, self._memory.setdefault(key, {}), self._store)
        return view

    def forget_plugin(self, plugin: str) -> None:
        """Drop a plugin's in-memory values (it was unregistered or reloaded)."""
        for k in [k for k in self._memory if k[0] == plugin]:
            del self._memory[k]
        for k in [k for k in self._views if k[0] == plugin]:
            del self._views[k]
