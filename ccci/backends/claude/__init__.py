"""The ``claude`` backend: Claude Code (``@anthropic-ai/claude-code``) in a tmux pane.

Registered through ``ccci_register_backends`` like any third-party backend. Facts used
here were measured with Claude Code 2.1.197 and are written down in
``docs/agent-clis.md`` (the "Claude Code ..." sections); the screen rules live in
``ccci/patterns/claude-2.1.197.toml`` (checked against ``tests/golden/claude-2.1.197/``)
and ``ccci/patterns/claude-2.1.332.toml`` (``tests/golden/claude-2.1.332-recorded/``);
the backend reads a pane with the file of the version its binary reports
(:meth:`ClaudeBackend.choose_version`).

Agent options (``[agents.options]`` in ``ccci.toml``):

``skip_permissions`` (bool, default ``True``)
    Pass ``--dangerously-skip-permissions`` so tool calls never stop at a permission
    dialog. The footer then always reads ``bypass permissions on``.
``remote_control`` (str or bool, default off)
    Pass ``--remote-control NAME``. A string is the name; ``True`` uses the agent's
    tmux session name ``ccci-<fleet>-<agent>``.
``settings`` (str, default off)
    Extra settings for this run only: a JSON object text or the path of a JSON file
    (docs/agent-clis.md#claude-code-session-files). Merged into the settings file
    ccci writes (below); without ccci's hooks it is passed to ``--settings`` as given.
``hooks`` (bool, default ``True``)
    Install ccci's lifecycle hooks: ccci writes ``<state_dir>/hooks/<agent>.settings.json``
    (0600) and passes it with ``--settings``. Its command hooks (:data:`HOOK_EVENTS`) run
    :mod:`ccci.backends.claude.hookrelay`, which appends each event to ``<state_dir>/hooks/<agent>.jsonl``;
    :mod:`ccci.backends.claude.claude_hooks` folds that spool into the agent's state every tick.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccci.backends import versions
from ccci.backends.base import Backend, LaunchPlan
from ccci.backends.versions import VersionedRules
from ccci.hookspecs import hookimpl
from ccci.model import AgentSpec

if TYPE_CHECKING:  # pragma: no cover
    from ccci.config import FleetConfig

#: Claude Code version the pattern file and these launch facts were checked against (the
#: pinned version the e2e tests run; the rules used when the binary's version is unknown).
TESTED_VERSION = "2.1.332"
#: other Claude Code versions with a pattern file and recorded screens: the e2e tests run
#: them with ``CCCI_CLAUDE_VERSION`` and ``.ci/setup`` installs them (2.1.197: the pin until
#: 2026-12-02, what the first fleets ran)
ALSO_TESTED = ("2.1.197",)
#: environment variable naming the Claude Code version whose pattern file reads the
#: screens (an explicit override of the version the binary reports; also what the e2e
#: tests install and run)
VERSION_ENV = "CCCI_CLAUDE_VERSION"


def binary_version(binary: str | Path = "claude", path: str | None = None) -> str | None:
    """The version a claude binary reports (:func:`ccci.backends.versions.binary_version`,
    cached per binary file, run with {'DISABLE_AUTOUPDATER': '1'})."""
    return versions.binary_version(binary, path, {'DISABLE_AUTOUPDATER': '1'})


def pattern_version_for(cli_version: str | None) -> str:
    """The tested version (a ``claude-<v>.toml`` pattern file) that reads the screens of
    ``cli_version``: the nearest one not newer than it, else the newest; for ``None``
    (version unknown) :data:`TESTED_VERSION`."""
    return versions.pattern_version_for("claude", cli_version, TESTED_VERSION)

#: Lifecycle hooks ccci installs; every one fired offline with 2.1.197
#: (tests/golden/claude-2.1.197/hooks/*.jsonl, docs/agent-clis.md#claude-code-lifecycle-hooks);
#: tests/e2e/test_claude_hooks_real.py passes on 2.1.332 too.
HOOK_EVENTS = ("SessionStart", "UserPromptSubmit", "Stop", "StopFailure", "PermissionRequest",
               "Notification", "SessionEnd", "PreCompact")
HOOK_TIMEOUT_S = 10  #: the CLI's per-hook time limit (seconds); the relay takes ~50 ms
SPOOL_TAIL = 64 * 1024  #: bytes of the hook spool :meth:`ClaudeBackend.turn_activity` reads at most (~500 records)


def _spool_tail(spec: AgentSpec, config: "FleetConfig") -> bytes | None:
    """The last :data:`SPOOL_TAIL` bytes of the agent's hook spool; ``None`` when ccci's
    hooks are off for the agent (``options.hooks = false``), the config has no state
    directory, or the spool does not exist yet."""
    if (spec.options or {}).get("hooks") is False or not getattr(config, "state_dir", None):
        return None
    _settings, spool = hook_paths(config.state_dir, spec.name)
    try:
        with open(spool, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - SPOOL_TAIL))
            return fh.read()
    except OSError:
        return None
RELAY = Path(__file__).resolve().parent / "hookrelay.py"


def hook_paths(state_dir: Path, agent: str) -> tuple[Path, Path]:
    """``(settings file, spool file)`` of ``agent``'s hooks under ``state_dir/hooks``."""
    d = Path(state_dir) / "hooks"
    return d / f"{agent}.settings.json", d / f"{agent}.jsonl"


def hook_settings(spool: Path, python: str | None = None) -> dict[str, Any]:
    """The ``hooks`` settings that relay every :data:`HOOK_EVENTS` event to ``spool``.

    Claude Code runs a command hook's ``command`` string through a shell; the string is
    only the relay's argv, each part quoted with :func:`shlex.quote`, so no path can be
    read as shell syntax.

    :returns: ``{"hooks": {event: [{"matcher"?: "*", "hooks": [{"type": "command",
        "command": str, "timeout": int}]}]}}``.
    """
    command = " ".join(shlex.quote(str(x)) for x in (python or sys.executable, RELAY, spool))
    hooks: dict[str, Any] = {}
    for ev in HOOK_EVENTS:
        entry: dict[str, Any] = {"hooks": [{"type": "command", "command": command, "timeout": HOOK_TIMEOUT_S}]}
        if ev == "PermissionRequest":
            entry["matcher"] = "*"
        hooks[ev] = [entry]
    return {"hooks": hooks}


def _user_settings(value: Any, agent: str) -> dict[str, Any]:
    text = str(value).strip()
    try:
        data = json.loads(text) if text.startswith("{") else json.loads(Path(text).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"agents.{agent}.options.settings: not a JSON object or a readable JSON file "
                         f"({type(exc).__name__}: {str(exc)[:100]}); fix the value or the file") from None
    if not isinstance(data, dict):
        raise ValueError(f"agents.{agent}.options.settings: expected a JSON object; fix the value or the file")
    return data


def write_hook_settings(state_dir: Path, agent: str, extra: Any = None) -> Path:
    """Write ``agent``'s settings file (0600, directory 0700): ccci's hooks merged with
    the user's ``options.settings`` (their hooks kept, ours appended per event). Creates
    the spool file (0600) so the relay only ever appends.

    :returns: the settings file path.
    :raises ValueError: when ``extra`` is not a JSON object or readable JSON file.
    """
    settings_file, spool = hook_paths(state_dir, agent)
    settings_file.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(settings_file.parent, 0o700)
    data = _user_settings(extra, agent) if extra else {}
    ours = hook_settings(spool)["hooks"]
    merged = dict(data.get("hooks") or {})
    for ev, entries in ours.items():
        merged[ev] = list(merged.get(ev) or []) + entries
    data["hooks"] = merged
    tmp = settings_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, settings_file)
    os.close(os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(spool, 0o600)
    return settings_file


class ClaudeBackend(VersionedRules, Backend):
    """Launch, resume and read Claude Code.

    Class attributes (see :class:`ccci.backends.base.Backend`):
        name: ``"claude"``.
        process_names: ``("claude",)``: the pane pid is the ``claude`` process itself
            (one native binary; tools run as ``bash -c`` children) and
            ``pane_current_command`` reads ``claude`` even while a tool runs
            (docs/agent-clis.md#claude-code-process-and-pane; tests/golden/claude-2.1.197/
            ``30_ps_process_tree.txt``, ``33_ps_during_bash_tool.txt``).
        exits_at_turn_end: ``False``: the interactive CLI stays alive after a turn and
            after every API failure (docs/agent-clis.md#claude-code-api-failures).
        supports_resume: ``True``: ``claude --resume <id>`` restores the conversation,
            offline too.
        compact_command: ``"/compact"`` (the CLI's own hint after a context-limit error:
            ``Context limit reached · /compact or /clear to continue``).
        paste_over: ``200``: :func:`ccci.send.deliver` pastes (bracketed paste) anything
            longer. Claude Code 2.1.332 cut typed bursts of 2000-3000 characters at a
            2048-byte read in 3 of 5 runs; pasted, 120/120 messages arrived whole
            (docs/agent-clis.md, "Claude Code 2.1.332").
        launch_prompt_after_box: ``True``: started with a prompt, Claude Code 2.1.332 draws
            its idle box, then submits the prompt (2.2 s after ``SessionStart`` in one run);
            the outbox types nothing until that first turn was seen
            (:data:`ccci.outbox.FIRST_TURN_WAIT_S`).
        executable, package, tested_versions: ``claude``, ``@anthropic-ai/claude-code``,
            ``(TESTED_VERSION, *ALSO_TESTED)`` (``ccci doctor``).
        cli_version: explicit override of the Claude Code version whose pattern file
            reads the screens (constructor argument or :meth:`use_cli_version`);
            ``None``: ``$CCCI_CLAUDE_VERSION`` if set, else the version ``binary``
            reports (:func:`binary_version`), else :data:`TESTED_VERSION`; the file is
            the nearest tested version not newer than that (:func:`pattern_version_for`).
        binary: the Claude Code command (``"claude"``, found on ``$PATH``, or a path).
        detected_version: what ``binary --version`` said when the patterns were chosen
            (``None``: not asked, or no answer).
    """

    name = "claude"
    version_env = VERSION_ENV
    default_version = TESTED_VERSION
    version_run_env = {"DISABLE_AUTOUPDATER": "1"}
    paste_over = 200
    launch_prompt_after_box = True
    cli_version: str | None = None
    binary: str = "claude"
    process_names = ("claude",)

    def __init__(self, cli_version: str | None = None, binary: str | None = None) -> None:
        super().__init__()
        self._init_versions(cli_version, binary)
    exits_at_turn_end = False
    supports_resume = True
    compact_command = "/compact"
    executable = "claude"
    package = "@anthropic-ai/claude-code"
    tested_versions = (TESTED_VERSION, *ALSO_TESTED)

    def read_usage(self, spec: AgentSpec, config: "FleetConfig", conversation_id: str,
                   since: str | None = None):
        """Usage from the session's transcript (:mod:`ccci.backends.claude.transcript`),
        read from where the previous call stopped (one cursor per transcript, kept in
        this backend object); ``None`` while the transcript does not exist."""
        from ccci.backends.claude import transcript

        paths = self.__dict__.setdefault("_usage_paths", {})
        path = paths.get((spec.name, conversation_id))
        if path is None or not path.exists():  # found once, then only stat()ed
            path = transcript.transcript_path(conversation_id, spec.env)
            if path is None:
                return None
            paths[(spec.name, conversation_id)] = path
        cursors = self.__dict__.setdefault("_usage_cursors", {})
        cur = cursors.get(path)
        if cur is None:
            cur = cursors[path] = transcript.TranscriptCursor(path)
        while cur.read():
            pass
        return cur.reading(conversation_id, since)

    def prompt_accepted_since(self, spec: AgentSpec, config: "FleetConfig", since: float) -> bool | None:
        """Whether the agent's ``UserPromptSubmit`` hook fired at or after ``since`` (UTC
        epoch seconds): Claude Code runs it when it takes a prompt from the input box,
        before the model request (2.1.197 and 2.1.332; docs/agent-clis.md#claude-code-lifecycle-hooks).
        Reads the last 64 KB of the agent's hook spool; records of subagents are ignored.

        :returns: ``None`` when ccci's hooks are off for the agent (``options.hooks =
            false``) or the spool does not exist yet; else ``True``/``False``.
        """
        tail = _spool_tail(spec, config)
        if tail is None:
            return None
        for line in reversed(tail.splitlines()):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            try:
                t = float(rec.get("t") or 0.0) if isinstance(rec, dict) else None
            except (TypeError, ValueError):
                t = None
            if t is None:
                continue
            if t < since - 0.5:  # older records only below: the spool is in time order
                return False
            if rec.get("ev") == "UserPromptSubmit" and not rec.get("agent_id"):
                return True
        return False

    def turn_activity(self, spec: AgentSpec, config: "FleetConfig", since: float, conversation_id: str = ""):
        """Turns started (``UserPromptSubmit``) and ended (``Stop``, ``StopFailure``) at or
        after ``since`` (UTC epoch seconds) in session ``conversation_id`` (when given: a
        fresh session started right after the old one's ``StopFailure`` must not take that
        for the end of its own launch turn), from the agent's hook spool (its last
        :data:`SPOOL_TAIL` bytes): Claude Code 2.1.332 runs ``UserPromptSubmit`` when it
        takes a prompt and ``Stop``/``StopFailure`` when the turn ends (a prompt typed
        during a turn is taken into that turn: a second ``UserPromptSubmit`` and one
        ``Stop``, seen in the e2e run of issue 16). A compaction runs from its
        ``PreCompact`` to the ``SessionStart`` with ``source=compact`` that follows it (a
        ``/compact`` that fails fires none: the outbox's stale rule ends that wait);
        ``SessionEnd`` ends whatever ran. Subagents' records are ignored.

        :returns: a :class:`ccci.backends.base.TurnActivity`; ``None`` when ccci's hooks
            are off for the agent or the spool does not exist yet.
        """
        from ccci.backends.base import TurnActivity

        tail = _spool_tail(spec, config)
        if tail is None:
            return None
        started = ended = 0
        in_turn = compacting = False
        at = 0.0
        for line in tail.splitlines():
            try:
                rec = json.loads(line)
                t = float(rec.get("t") or 0.0)
            except (ValueError, TypeError, AttributeError):
                continue  # the tail's cut first line, a partial last one
            ev = rec.get("ev")
            sid = rec.get("sid")
            if t < since or rec.get("agent_id") or (conversation_id and sid and sid != conversation_id):
                continue
            if ev == "UserPromptSubmit":
                started += 1
                in_turn = True
            elif ev in ("Stop", "StopFailure"):
                ended += 1
                in_turn = compacting = False
            elif ev == "SessionStart" and rec.get("source") == "compact":
                compacting = False  # an automatic compaction's turn goes on
            elif ev == "SessionEnd":
                in_turn = compacting = False
            elif ev == "PreCompact":
                compacting = True  # a compaction (a typed /compact too) runs until its SessionStart
            else:
                continue
            at = t
        return TurnActivity(started=started, ended=ended, running=in_turn or compacting, at=at)

    @staticmethod
    def running_as_root() -> bool:
        """True when ccci (and so the agent it starts) runs with effective uid 0."""
        geteuid = getattr(os, "geteuid", None)
        return bool(geteuid is not None and geteuid() == 0)

    def launch(
        self,
        spec: AgentSpec,
        config: "FleetConfig",
        conversation_id: str,
        resume: bool,
        prompt: str,
    ) -> LaunchPlan:
        """The command that starts (``resume=False``) or resumes Claude Code.

        argv, executed directly by tmux (no shell, so nothing is re-quoted):

        * fresh start: ``claude --session-id <id> ...``: the session uses the id ccci
          chose everywhere (transcript name, ``~/.claude/sessions/<pid>.json``, hooks,
          the ``X-Claude-Code-Session-Id`` header);
        * resume: ``claude --resume <id> ...`` (hook ``SessionStart`` then has
          ``source: resume``);
        * ``--dangerously-skip-permissions`` unless ``options.skip_permissions`` is false;
        * ``--model <spec.model>`` when the agent names a model;
        * ``--remote-control <name>`` when ``options.remote_control`` is set;
        * ``--settings <state_dir>/hooks/<agent>.settings.json`` (ccci's lifecycle hooks,
          :func:`write_hook_settings`, merged with ``options.settings``) unless
          ``options.hooks`` is false or ``config`` has no ``state_dir``; else
          ``--settings <value>`` when ``options.settings`` is set;
        * the prompt LAST, as one positional argument (never piped, never typed: typed
          text of 100+ characters loses its Enter, docs/agent-clis.md#enter-after-paste).
          A prompt starting with ``-`` is preceded by ``--`` so it is not read as an
          option.

        Environment additions: ``DISABLE_AUTOUPDATER=1`` (no self-update of a pinned CLI);
        ``IS_SANDBOX=1`` when running as root with skip-permissions, without which Claude
        Code 2.1.197 prints "cannot be used with root/sudo privileges" and exits 1
        (docs/agent-clis.md#claude-code-offline); then ``spec.env`` on top (the user's values win).

        :param spec: the agent; ``spec.model`` (str, ``""`` = CLI default),
            ``spec.options`` (see the module docstring), ``spec.env``, ``spec.workdir``.
        :param config: the fleet config; ``config.name`` (str, fleet name) for the default
            remote-control name, ``config.state_dir`` (Path) for the hook files.
        :param conversation_id: a UUID string (Claude Code's ``--session-id`` and
            ``--resume`` take UUIDs); :meth:`new_conversation_id` makes one.
        :param resume: continue ``conversation_id`` instead of starting it.
        :param prompt: initial prompt text (``""`` for none, e.g. on a plain resume).
        :returns: a :class:`ccci.backends.base.LaunchPlan` with ``cwd=spec.workdir`` and
            ``conversation_id`` in canonical lower-case UUID form.
        :raises ValueError: when ``conversation_id`` is not a UUID, or ``options.settings``
            is not JSON.
        """
        try:
            session_id = str(uuid.UUID(str(conversation_id)))
        except ValueError:
            raise ValueError(
                f"claude backend: conversation id {conversation_id!r} for agent {spec.name!r} "
                "is not a UUID; Claude Code's --session-id/--resume need one "
                "(use ClaudeBackend.new_conversation_id())"
            ) from None
        opts = spec.options or {}
        skip_permissions = bool(opts.get("skip_permissions", True))
        # read this run's screens with the rules of the Claude Code it will start
        self.refresh_version((spec.env or {}).get("PATH"))

        argv = ["claude", "--resume" if resume else "--session-id", session_id]
        if skip_permissions:
            argv.append("--dangerously-skip-permissions")
        if spec.model:
            argv += ["--model", spec.model]
        remote = opts.get("remote_control")
        if remote:
            remote_name = remote if isinstance(remote, str) else f"ccci-{config.name}-{spec.name}"
            argv += ["--remote-control", remote_name]
        state_dir = getattr(config, "state_dir", None)
        if opts.get("hooks", True) and state_dir is not None:
            argv += ["--settings", str(write_hook_settings(state_dir, spec.name, opts.get("settings")))]
        elif opts.get("settings"):
            argv += ["--settings", str(opts["settings"])]
        if prompt:
            if prompt.startswith("-"):
                argv.append("--")
            argv.append(prompt)

        env = {"DISABLE_AUTOUPDATER": "1"}
        if skip_permissions and self.running_as_root():
            env["IS_SANDBOX"] = "1"
        env.update(spec.env or {})
        return LaunchPlan(argv=argv, env=env, cwd=spec.workdir, conversation_id=session_id)


@hookimpl
def ccci_register_backends():
    return [ClaudeBackend()]
