"""The one layer through which the runner calls plugin code (the idea of pytest's
``CallInfo``: every call's outcome is a value, never an exception in the caller).

Every hook implementation — checks, observers, remedy choice, remedy runs, reporters,
lifecycle hooks — is called on its own by :meth:`PluginCalls.call`:

* with only the arguments it declares (pluggy's ``argnames``); ``stash`` (the plugin's
  :class:`ccci.stash.Stash` for the hook's agent) and ``services`` (a
  :class:`ccci.services.Services` bound to the plugin) are offered to every hook;
* under a time limit (SIGALRM on the main thread, like pytest-timeout's signal method):
  ``check_timeout`` seconds (default 10) for checks, observers, remedy choice and
  reporters; ``remedy_timeout`` (default 60) for remedy runs and ``ccci_configure``.
  One ``ITIMER_REAL`` serves every call (:class:`_AlarmClock`): a call records its
  deadline; the timer is armed only when it would fire later than that deadline (the
  first call of a tick; a later call's deadline is later), and when it fires during a
  call whose deadline has not come it is armed again for the rest. Within a tick
  (:meth:`PluginCalls.begin_tick` ... :meth:`PluginCalls.disarm`) that is about two
  ``setitimer`` system calls per tick instead of two per call (bench/: ~14 calls per
  agent per tick, 2.6 us each under cProfile); outside a tick every timed call disarms
  the timer when it returns, as before;
* a raise, a time-out, or a result of the wrong type (:data:`RESULT_RULES`) is a failed
  call: UNKNOWN for that implementation only, reported as one ``plugin_error`` event
  naming the plugin, the hook and the ``file:line`` where it raised;
* a plugin with a failed call on :data:`PLUGIN_ERROR_LIMIT` consecutive ticks (of those
  in which it was called) is disabled (a ``plugin_disabled`` event), except an essential builtin
  (:meth:`ccci.plugins.CcciPluginManager.is_essential`), which is never disabled.

Order: ``tryfirst`` implementations, then the others, then ``trylast`` ones; within each
group builtins come first, then plugins in the order they were registered (entry
points, then the fleet's ``ccci_plugins.py``). A third-party plugin therefore overrides
a builtin decision only by asking for it (``@hookimpl(tryfirst=True)``).

Hook wrappers (``wrapper=True`` / ``hookwrapper=True``) are refused at registration
(:meth:`ccci.plugins.CcciPluginManager.register_checked`): every implementation is
called on its own here, outside pluggy's call loop, so a wrapper would never wrap.
"""
from __future__ import annotations

import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ccci.model import Finding, Remedy, RemedyResult

if TYPE_CHECKING:  # pragma: no cover
    from ccci.plugins import CcciPluginManager
    from ccci.stash import Stashes

PLUGIN_ERROR_LIMIT = 5  #: consecutive ticks with a failed call before a plugin is disabled
CHECK_HOOKS = frozenset({"ccci_check_agent", "ccci_check_fleet"})
#: hooks whose implementations get ``remedy_timeout`` instead of ``check_timeout``
LONG_HOOKS = frozenset({"ccci_run_remedy", "ccci_configure", "ccci_unconfigure"})


def _findings_shaped(result: Any) -> bool:
    if result is None or isinstance(result, Finding):
        return True
    return isinstance(result, (list, tuple)) and all(isinstance(f, Finding) for f in result)


#: hook -> (what a result must be, test). Hooks not listed: the result is ignored.
RESULT_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "ccci_check_agent": ("a Finding, a list of Findings or None", _findings_shaped),
    "ccci_check_fleet": ("a Finding, a list of Findings or None", _findings_shaped),
    "ccci_choose_remedy": ("a Remedy or None", lambda r: r is None or isinstance(r, Remedy)),
    "ccci_run_remedy": ("a RemedyResult or None", lambda r: r is None or isinstance(r, RemedyResult)),
    "ccci_launch_env": ("a dict of str to str or None", lambda r: r is None or (
        isinstance(r, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in r.items()))),
    "ccci_prompt_preamble": ("a str or None", lambda r: r is None or isinstance(r, str)),
    "ccci_agent_active": ("True, False or None", lambda r: r is None or isinstance(r, bool)),
    "ccci_before_launch": ("a str (why not to launch) or None", lambda r: r is None or isinstance(r, str)),
}


class PluginTimeout(Exception):
    """A hook implementation ran past its time limit and was interrupted."""


class PluginResultError(TypeError):
    """A hook implementation returned a result of the wrong type."""


class _AlarmClock:
    """The process's one ``ITIMER_REAL`` as the calls use it (main thread only).

    Attributes:
        deadline: monotonic deadline of the timed call running now (``None``: none runs).
        armed_at: monotonic time the timer is set to fire (``None``: disarmed, as far as
            ccci knows; reset whenever another SIGALRM handler was found installed).
    """

    deadline: float | None = None
    armed_at: float | None = None

    def arm(self, deadline: float, now: float) -> None:
        """Make the timer fire no later than ``deadline`` (a system call only when it is
        disarmed or set to fire later)."""
        self.deadline = deadline
        if self.armed_at is None or self.armed_at > deadline:
            signal.setitimer(signal.ITIMER_REAL, max(deadline - now, 1e-6))
            self.armed_at = deadline

    def disarm(self) -> None:
        self.deadline = None
        if self.armed_at is not None:
            self.armed_at = None
            signal.setitimer(signal.ITIMER_REAL, 0)


_ALARM = _AlarmClock()
_MAIN_IDENT = threading.main_thread().ident


def _on_alarm(signum: int, frame: Any) -> None:
    """SIGALRM: interrupt the running call if its deadline passed; else arm the timer
    again for the rest of it (the timer was set by an earlier call); nothing when no
    timed call runs (the timer left armed at the end of a call outside a tick)."""
    _ALARM.armed_at = None
    deadline = _ALARM.deadline
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left > 0:
        signal.setitimer(signal.ITIMER_REAL, left)
        _ALARM.armed_at = deadline
        return
    raise PluginTimeout("ran past its time limit and was interrupted")


try:  # the C function under signal.getsignal, which wraps every answer in an enum
    # lookup that raises and catches ValueError for a Python handler: ~1.7 us, run for
    # every check of every agent (0.6 ms of a 50-agent tick in bench/); this is ~0.1 us
    from _signal import getsignal as _raw_getsignal
except ImportError:  # pragma: no cover - not CPython
    _raw_getsignal = signal.getsignal


@dataclass(slots=True)
class CallInfo:
    """The outcome of one call of one hook implementation.

    Attributes:
        hook: hook name, e.g. ``"ccci_check_agent"``.
        plugin: the implementing plugin's name.
        result: what it returned (``None`` when it failed).
        excinfo: the exception when it raised, timed out or returned the wrong type.
        duration_s: wall seconds the call took.
        where: ``file:line`` where it raised (the innermost frame), else ``""``.
    """

    hook: str
    plugin: str
    result: Any = None
    excinfo: BaseException | None = None
    duration_s: float = 0.0
    where: str = ""

    @property
    def ok(self) -> bool:
        return self.excinfo is None


def where_raised(exc: BaseException) -> str:
    """``file:line`` of the innermost traceback frame of ``exc`` (``""`` without one)."""
    tb = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else None
    return f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""


class PluginCalls:
    """Calls hook implementations in isolation and keeps the strike count.

    :param pm: the plugin manager.
    :param emit: ``emit(kind, message, agent=None, **data)``: how ``plugin_error``,
        ``plugin_slow`` and ``plugin_disabled`` events are reported.
    :param settings: ``() -> dict``: the fleet's ``[checks]`` thresholds
        (``check_timeout``, ``remedy_timeout``, ``check_budget``; seconds).
    :param stashes: the runner's :class:`ccci.stash.Stashes`.
    :param services_for: ``plugin name -> Services`` bound to that plugin.
    """

    def __init__(self, pm: "CcciPluginManager", emit: Callable[..., None], settings: Callable[[], dict],
                 stashes: "Stashes", services_for: Callable[[str], Any]) -> None:
        self.pm = pm
        self.emit = emit
        self.settings = settings
        self.stashes = stashes
        self.services_for = services_for
        self.strikes: dict[str, int] = {}
        self._failed_this_tick: set[str] = set()
        self._called_this_tick: set[str] = set()
        self._order_cache: dict[str, tuple[int, list]] = {}
        self._alarm_depth = 0
        self._in_tick = False
        #: (check_timeout, remedy_timeout, check_budget) in seconds, read once per tick
        self._limits: tuple[float, float, float] | None = None
        self._alarm_ok = False  #: ccci's SIGALRM handler was found installed at the tick's start

    # ------------------------------------------------------------------ order
    def ordered(self, hook: str) -> list:
        """Implementations of ``hook`` in calling order (see the module docstring)."""
        cached = self._order_cache.get(hook)
        if cached is not None and cached[0] == self.pm.version:
            return cached[1]
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        builtin = self.pm.is_builtin

        def key(item: tuple[int, Any]) -> tuple:
            index, impl = item
            group = 0 if impl.tryfirst else 2 if impl.trylast else 1
            return (group, 0 if builtin(impl.plugin_name) else 1, index)

        order = [impl for _, impl in sorted(enumerate(impls), key=key)]
        self._order_cache[hook] = (self.pm.version, order)
        return order

    # ------------------------------------------------------------------ one call
    def _args(self, impl: Any, hook: str, kwargs: dict[str, Any], plugin: str, agent: str | None) -> list[Any]:
        """The arguments ``impl`` declares, from ``kwargs`` plus its ``stash`` and
        ``services``. :raises TypeError: it declares one the hook does not offer."""
        args = []
        for name in impl.argnames:
            if name in kwargs:
                args.append(kwargs[name])
            elif name == "stash":
                args.append(self.stashes.get(plugin, agent))
            elif name == "services":
                args.append(self.services_for(plugin))
            else:
                raise TypeError(f"{hook} offers no argument {name!r}")
        return args

    def _invoke(self, fn: Callable[..., Any], args: list[Any], timed: bool, deadline: float, start: float) -> Any:
        """``fn(*args)``, cut off at ``deadline`` (monotonic s) by the shared timer when
        ``timed``."""
        if timed:
            _ALARM.arm(deadline, start)
        self._alarm_depth += 1
        try:
            return fn(*args)
        finally:
            self._alarm_depth -= 1
            if timed:
                _ALARM.deadline = None
                if not self._in_tick:
                    _ALARM.disarm()

    def call(self, impl: Any, hook: str, kwargs: dict[str, Any], agent: str | None = None) -> CallInfo:
        """Call one implementation with the arguments it declares; never raises
        (except ``KeyboardInterrupt``/``SystemExit``).

        :param agent: whose ``stash`` the implementation gets (``None``: the fleet's).
        """
        plugin = impl.plugin_name
        info = CallInfo(hook, plugin)
        self._called_this_tick.add(plugin)
        timed = self._alarm_depth == 0 and self._can_alarm()
        start = time.monotonic()
        check_limit, long_limit, budget = self._limits or self._read_limits()
        try:
            args = self._args(impl, hook, kwargs, plugin, agent)
            info.result = self._invoke(impl.function, args, timed, start + (long_limit if hook in LONG_HOOKS else check_limit),
                                       start)
        except Exception as exc:  # noqa: BLE001 - a plugin must never stop the daemon
            info.excinfo = exc
            info.where = where_raised(exc)
        info.duration_s = time.monotonic() - start
        return self._finish(info, impl, budget)

    def _finish(self, info: CallInfo, impl: Any, budget: float) -> CallInfo:
        """After a call: the result rule (:data:`RESULT_RULES`), a failure's
        ``plugin_error`` and strike, a slow check's ``plugin_slow``."""
        hook = info.hook
        rule = RESULT_RULES.get(hook)
        if rule is not None and info.excinfo is None:
            want, test = rule
            if not test(info.result):
                info.excinfo = PluginResultError(f"returned {type(info.result).__name__} {str(info.result)[:60]!r}; "
                                                 f"{hook} returns {want}")
                info.where = _source_of(impl.function)
                if hook in CHECK_HOOKS:  # the Findings in it still count
                    items = info.result if isinstance(info.result, (list, tuple)) else [info.result]
                    info.result = [f for f in items if isinstance(f, Finding)]
                else:
                    info.result = None
        if info.excinfo is not None:
            self._failed(info)
        elif hook in CHECK_HOOKS:
            if info.duration_s > budget:
                self.emit("plugin_slow", f"{info.plugin}.{hook} took {info.duration_s:.2f}s (budget {budget}s)",
                          plugin=info.plugin, hook=hook, seconds=round(info.duration_s, 3))
        return info

    def _failed(self, info: CallInfo) -> None:
        name = info.plugin
        if name not in self._failed_this_tick:
            self._failed_this_tick.add(name)
            self.strikes[name] = self.strikes.get(name, 0) + 1
        if info.hook == "ccci_report_event":
            return  # reporting a reporter's failure through the reporters would loop
        exc = info.excinfo
        self.emit("plugin_error", f"plugin {name}: {info.hook} raised {type(exc).__name__}: {str(exc)[:200]} "
                  f"at {info.where or '?'} (UNKNOWN)",
                  plugin=name, hook=info.hook, where=info.where, error=type(exc).__name__)

    def guarded(self, plugin: str, what: str, fn: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        """Call a backend method (or any other plugin-provided callable that is not a
        hook implementation) the same way: time-limited, a raise or time-out reported
        as a ``plugin_error`` of ``plugin`` (``what`` names the method, e.g.
        ``"claude.analyse"``) and counted toward its strikes; returns ``default`` then,
        and without calling once the plugin is disabled."""
        if plugin in self.pm.disabled:
            return default
        info = CallInfo(hook=what, plugin=plugin)
        self._called_this_tick.add(plugin)
        timed = self._alarm_depth == 0 and self._can_alarm()
        start = time.monotonic()
        try:
            return self._invoke(fn, list(args), timed, start + (self._limits or self._read_limits())[0], start)
        except Exception as exc:  # noqa: BLE001 - a plugin must never stop the daemon
            info.excinfo, info.where = exc, where_raised(exc)
            info.duration_s = time.monotonic() - start
            self._failed(info)
            return default

    # ------------------------------------------------------------------ many calls
    def call_all(self, hook: str, kwargs: dict[str, Any], agent: str | None = None) -> list[CallInfo]:
        """Call every implementation; returns the :class:`CallInfo` of each call that
        produced a non-``None`` result (a failed check may still carry Findings)."""
        out: list[CallInfo] = []
        impls = self.ordered(hook)
        if not impls:
            return out
        # what :meth:`call` does per call, with the hook's invariants read once and a
        # CallInfo built only for a result or a failure (the common check returns None):
        # bench/ makes ~14 calls per agent per tick
        timed = self._alarm_depth == 0 and self._can_alarm()
        check_limit, long_limit, budget = self._limits or self._read_limits()
        limit = long_limit if hook in LONG_HOOKS else check_limit
        rule = RESULT_RULES.get(hook)
        test = rule[1] if rule is not None else None
        slow_at = budget if hook in CHECK_HOOKS else None
        called = self._called_this_tick
        monotonic = time.monotonic
        for impl in impls:
            plugin = impl.plugin_name
            called.add(plugin)
            start = monotonic()
            result = exc = None
            try:
                result = self._invoke(impl.function, self._args(impl, hook, kwargs, plugin, agent), timed, start + limit, start)
            except Exception as e:  # noqa: BLE001 - a plugin must never stop the daemon
                exc = e
            took = monotonic() - start
            if exc is None and (test is None or test(result)) and (slow_at is None or took <= slow_at):
                if result is not None:
                    out.append(CallInfo(hook, plugin, result, None, took, ""))
                continue
            info = self._finish(CallInfo(hook, plugin, result, exc, took, where_raised(exc) if exc else ""),
                                impl, budget)
            if info.result is not None:
                out.append(info)
        return out

    def call_first(self, hook: str, kwargs: dict[str, Any], agent: str | None = None,
                   accept: Callable[[CallInfo], bool] | None = None) -> CallInfo | None:
        """Call implementations in order until one returns an accepted non-``None``
        result (``firstresult`` with isolation: a failing implementation is skipped).

        :param accept: ``CallInfo -> bool``: a further test of the result (default: any).
        """
        for impl in self.ordered(hook):
            info = self.call(impl, hook, kwargs, agent)
            if info.ok and info.result is not None and (accept is None or accept(info)):
                return info
        return None

    # ------------------------------------------------------------------ the tick's timer
    def begin_tick(self) -> None:
        """From now until :meth:`disarm`, a timed call leaves the timer armed when it
        returns (the next call's deadline is later: no system call), instead of
        disarming it (see :class:`_AlarmClock`)."""
        self._in_tick = True
        self._limits = None
        self._alarm_ok = False
        self._limits = self._read_limits()
        self._alarm_ok = self._can_alarm()

    def _read_limits(self) -> tuple[float, float, float]:
        s = self.settings()
        limits = (float(s.get("check_timeout", 10.0)), float(s.get("remedy_timeout", 60.0)),
                  float(s.get("check_budget", 2.0)))
        return limits

    def disarm(self) -> None:
        """End of a tick: disarm the timer (one ``setitimer`` when it is armed) and go
        back to disarming after every call. Idempotent; main thread only."""
        self._in_tick = False
        self._limits = None
        if threading.get_ident() == _MAIN_IDENT:
            _ALARM.disarm()

    # ------------------------------------------------------------------ accounting
    def end_tick(self) -> None:
        """Strike accounting at the end of a tick: a plugin with a failed call on
        :data:`PLUGIN_ERROR_LIMIT` consecutive ticks in which it was called is disabled;
        a tick in which it was called and nothing failed clears its count (ticks in
        which it was not called at all, e.g. a remedy plugin between findings, count
        neither way)."""
        for name in list(self.strikes):
            if name not in self._failed_this_tick:
                if name in self._called_this_tick:
                    del self.strikes[name]
            elif self.strikes[name] >= PLUGIN_ERROR_LIMIT:
                reason = f"failed on {PLUGIN_ERROR_LIMIT} ticks in a row"
                if self.pm.disable(name, reason):
                    self.stashes.forget_plugin(name)
                    self.emit("plugin_disabled", f"plugin {name} {reason}; disabled until the watcher restarts "
                              f"(fix it, then restart the watcher or send it SIGHUP)", plugin=name, reason=reason)
                    del self.strikes[name]
        self._failed_this_tick = set()
        self._called_this_tick = set()

    def _can_alarm(self) -> bool:
        """True on the main thread (the only one SIGALRM interrupts), with ccci's
        handler installed (checked once per tick within a tick)."""
        if threading.get_ident() != _MAIN_IDENT:
            return False
        if self._in_tick and self._alarm_ok:
            return True
        if _raw_getsignal(signal.SIGALRM) is not _on_alarm:
            signal.signal(signal.SIGALRM, _on_alarm)
            _ALARM.armed_at = None  # whoever else had the signal may have set the timer
        return True


def _source_of(function: Any) -> str:
    code = getattr(function, "__code__", None)
    return f"{Path(code.co_filename).name}:{code.co_firstlineno}" if code else ""
