"""The backend interface: how to launch, resume and read one kind of agent CLI.

Backends are registered by plugins through the ``ccci_register_backends`` hook; the
builtin ones (``scripted``, ``claude``) use the same hook a third party would.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccci import patterns as patterns_mod
from ccci.model import AgentSpec, AgentState, ScreenAnalysis

if TYPE_CHECKING:  # pragma: no cover
    from datetime import datetime

    from ccci.config import FleetConfig
    from ccci.usage import UsageReading


@dataclass
class LaunchPlan:
    """How to start an agent in a pane.

    Attributes:
        argv: program and arguments, executed directly by tmux (no shell).
        env: environment additions (never logged: may hold API keys).
        cwd: working directory.
        conversation_id: the id the agent will use (persisted for resumes).
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    conversation_id: str = ""


@dataclass(frozen=True)
class TurnActivity:
    """What an agent CLI itself reported about its turns since a point in time
    (:meth:`Backend.turn_activity`).

    Attributes:
        started: turns that began since then (the CLI took a prompt).
        ended: turns that ended since then (an answer, or an API error that ended the turn).
        running: the newest of those reports is a start: a turn is running now.
        at: unix seconds (UTC) of that newest report (``0.0`` when there is none).
    """

    started: int = 0
    ended: int = 0
    running: bool = False
    at: float = 0.0


class Backend:
    """Base class; subclass and override what differs.

    Class attributes:
        name: backend name used in ``ccci.toml`` (``backend = "claude"``).
        process_names: names the agent's process has (``psutil`` ``name()``), used to
            find hand-launched agents and to tell the agent from a shell in the pane.
        exits_at_turn_end: the CLI exits when the model ends its turn (``opencode run``):
            a dead process is then resumed promptly, not treated as a crash.
        supports_resume: the CLI can continue a conversation by id.
        compact_command: text that compacts the context (``/compact``), or ``""``.
        nudge_text: what a stall nudge types into the agent.
        paste_over: messages longer than this (characters) are pasted, not typed
            (:func:`ccci.send.deliver`; default 4000).
        launch_prompt_after_box: the CLI draws an idle input box before it submits the
            prompt it was launched with, so the outbox waits for that first turn
            (default ``False``).
        cli_version: pattern version to use (``None``: newest shipped).
        pattern_data: the backend's screen rules as data (the parsed form of a pattern
            TOML file: ``meta``, ``layout``, ``rules``), for a backend that ships outside
            ccci; ``None``: ``ccci/patterns/<name>-<version>.toml``.
        executable: the CLI's program name, looked up on ``PATH`` by ``ccci doctor``
            (``""``: the backend runs no separately installed CLI).
        version_args: arguments that make :attr:`executable` print its version.
        tested_versions: CLI versions the rules and launch facts were checked against
            (``()``: the version the rules are for, :meth:`versions_tested`).
        package: how the CLI is installed (an npm package name), for ``ccci doctor``'s
            advice; ``""`` when unknown.
    """

    name: str = ""
    process_names: tuple[str, ...] = ()
    exits_at_turn_end: bool = False
    launch_prompt_after_box: bool = False
    supports_resume: bool = True
    compact_command: str = "/compact"
    nudge_text: str = (
        "ccci: no progress seen for a while. Continue your loop; if you are waiting, end "
        "your turn with WAITING-UNTIL: <ISO-8601 UTC>."
    )
    cli_version: str | None = None
    pattern_data: dict[str, Any] | None = None
    executable: str = ""
    version_args: tuple[str, ...] = ("--version",)
    tested_versions: tuple[str, ...] = ()
    package: str = ""

    def __init__(self) -> None:
        self._patterns: patterns_mod.PatternSet | None = None
        self._overrides: list[dict[str, Any]] = []
        self._override_origin = ""

    # ------------------------------------------------------------------ patterns
    @property
    def patterns(self) -> patterns_mod.PatternSet:
        """The :class:`ccci.patterns.PatternSet` in force (shipped data + overrides)."""
        if self._patterns is None:
            if self.pattern_data is not None:
                ps = patterns_mod.PatternSet.from_dict(self.pattern_data, f"{type(self).__qualname__}.pattern_data")
            else:
                ps = patterns_mod.load_for(self.name, self.pattern_version())
            if self._overrides:
                ps = ps.with_overrides(self._overrides, self._override_origin)
            self._patterns = ps
        return self._patterns

    @property
    def rules_version(self) -> str:
        """The CLI version the screen rules in force are for (their ``meta.version``)."""
        return self.patterns.version

    def versions_tested(self) -> tuple[str, ...]:
        """CLI versions this backend was checked against: :attr:`tested_versions`, else
        the version its rules are for."""
        if self.tested_versions:
            return tuple(self.tested_versions)
        return (self.rules_version,) if self.rules_version else ()

    def running_version(self, spec: AgentSpec, config: "FleetConfig", conversation_id: str) -> str | None:
        """The version the agent's CLI recorded about itself when it started (e.g. in its
        session file), when the backend can tell; ``None`` (the default) otherwise.

        :param spec: the agent.
        :param config: the fleet config.
        :param conversation_id: the conversation ccci persisted for the agent (may be ``""``).
        """
        return None

    def pattern_version(self) -> str | None:
        """The CLI version whose pattern file reads the screens (``None``: the newest
        shipped). The base class returns :attr:`cli_version`; a backend may find out
        which CLI version it runs (``ClaudeBackend`` asks the binary)."""
        return self.cli_version

    def use_cli_version(self, version: str | None) -> None:
        """Read screens with the pattern file of CLI ``version`` from now on (the newest
        ``<name>-<v>.toml`` with ``v <= version``, else the newest; ``None``: the
        backend's default). User overrides stay.

        :raises ccci.patterns.PatternError: when no pattern file exists for the backend.
        """
        self.cli_version = version
        self._patterns = None
        _ = self.patterns

    def set_overrides(self, rules: list[dict[str, Any]], origin: str) -> None:
        """Install user rules from ``ccci.toml`` ``[patterns.<name>]``.

        :raises ccci.patterns.PatternError: when a rule is malformed.
        """
        self._overrides = list(rules)
        self._override_origin = origin
        self._patterns = None
        _ = self.patterns  # validate now, at config load

    def analyse(self, screen: str, title: str = "", now: "datetime | None" = None) -> ScreenAnalysis:
        """Read a pane capture; see :meth:`ccci.patterns.PatternSet.analyse` (``now``:
        the capture's UTC time, default now, for reset times shown without a date)."""
        return self.patterns.analyse(screen, title, now)

    def is_agent_process(self, name: str, cmdline: list[str]) -> bool:
        """True when a process (``psutil`` ``name()`` and ``cmdline()``) is this backend's
        agent CLI; used to find agents a person launched by hand."""
        return name in self.process_names

    def is_ready_for_input(self, analysis: ScreenAnalysis) -> bool:
        """True when typing a message now will not interrupt a turn."""
        return analysis.state in (AgentState.IDLE,)

    def launch_blocked(self, spec: AgentSpec, config: "FleetConfig") -> str | None:
        """Why a launch of this agent cannot work yet, or ``None`` (this default). The
        runner then holds a restart (no restart counted, no backoff, one ``finding``
        event saying it waits) and asks again on the next tick: waiting for something
        the CLI needs (opencode's shared server while it starts) is not a failure of
        the agent. Must be cheap (it runs on the tick path) and never raise."""
        return None

    def prompt_accepted_since(self, spec: AgentSpec, config: "FleetConfig", since: float) -> bool | None:
        """Whether the CLI itself reported taking a prompt at or after ``since`` (UTC epoch
        seconds): the structured proof :func:`ccci.send.deliver` prefers over the screen.

        :returns: ``True``/``False``; ``None`` (this default) when the CLI has no such
            report, and the screen decides alone.
        """
        return None

    def turn_activity(self, spec: AgentSpec, config: "FleetConfig", since: float,
                      conversation_id: str = "") -> TurnActivity | None:
        """The turns the CLI itself reported starting and ending at or after ``since``
        (UTC epoch seconds; the current process's start), in conversation
        ``conversation_id`` when given (``""``: any): the structured source the
        outbox (:mod:`ccci.outbox`) prefers over the screen to know whether a turn (the
        launch prompt's above all) is still running, since a message typed during a turn
        joins it.

        :returns: a :class:`TurnActivity`; ``None`` (this default) when the CLI has no
            such report, and the screen decides alone.
        """
        return None

    def read_usage(self, spec: AgentSpec, config: "FleetConfig", conversation_id: str,
                   since: str | None = None) -> "UsageReading | None":
        """Token usage and context use of conversation ``conversation_id`` as the CLI
        recorded them (its transcript, session data or API), read incrementally where the
        backend can (a backend keeps its own read offsets between calls).

        :param spec: the agent (its ``env`` locates the CLI's files, e.g. ``HOME``).
        :param config: the fleet config.
        :param conversation_id: the conversation ccci persisted for the agent.
        :param since: only UTC days ``>=`` this ``YYYY-MM-DD`` in the totals (``None``: all).
        :returns: a :class:`ccci.usage.UsageReading` (absolute totals per day, source and
            model; the current context use), or ``None`` (this default) when the CLI
            records nothing ccci can read, or not yet.
        """
        return None

    # ------------------------------------------------------------------ launching
    def new_conversation_id(self) -> str:
        """A fresh conversation id (UUID4 string)."""
        return str(uuid.uuid4())

    def launch(
        self,
        spec: AgentSpec,
        config: "FleetConfig",
        conversation_id: str,
        resume: bool,
        prompt: str,
    ) -> LaunchPlan:
        """The command that starts (``resume=False``) or resumes the agent.

        :param spec: the agent.
        :param config: the fleet config (state dir, origin...).
        :param conversation_id: the id to start with or to resume.
        :param resume: continue ``conversation_id`` instead of starting fresh.
        :param prompt: the initial prompt (phase preamble + role prompt) for a fresh
            start; passed as an argument, never piped.
        :raises NotImplementedError: in the base class.
        """
        raise NotImplementedError
