"""The ``codex`` backend: OpenAI Codex CLI (``@openai/codex``) in a tmux pane.

Registered through ``ccci_register_backends`` like any third-party backend. Facts used
here were measured with Codex CLI 0.169.0 offline (``docs/backends.md``, "Codex CLI") and
checked again on 0.171.0, the pinned version since (``docs/agent-clis.md``, "Codex CLI
0.171.0"); the screen rules live in ``ccci/patterns/codex-0.171.0.toml`` (checked against
``tests/golden/codex-0.171.0/``) and ``ccci/patterns/codex-0.169.0.toml``
(``tests/golden/codex-0.169.0/``); the backend reads a pane with the file of the version
its binary reports (:meth:`CodexBackend.choose_version`).

Codex assigns its own session id (a UUIDv7, e.g. ``01a2023b-d217-7183-93d8-730de81570f0``)
when a session starts; it cannot be chosen on the command line. ccci learns it three ways:

1. its own ``SessionStart`` lifecycle hook: every launch passes ``-c hooks.SessionStart=...``
   (a command hook that writes the hook's JSON, which has ``session_id``, to
   :meth:`CodexBackend.session_start_file`) and ``--dangerously-bypass-hook-trust``
   (hooks not in Codex's trust store do not run otherwise). Codex 0.169.0 and 0.171.0
   fire it when the thread starts (at the first prompt) and on resume
   (``tests/golden/codex-0.1{69,71}.0/hooks/lifecycle.hooks.jsonl``);
2. the session file ``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<local time>-<id>.jsonl``
   (first line ``session_meta`` with ``payload.id`` and ``payload.cwd``), which the running
   ``codex`` process keeps open: :meth:`CodexBackend.session_id_of_pid` reads it there,
   :meth:`CodexBackend.sessions` lists the files;
3. failing both, ``codex resume --last`` picks the newest session whose cwd is the
   agent's workdir (Codex filters ``resume`` by cwd unless ``--all``).

A resume with an id Codex knows runs ``codex resume <id>``; with ccci's own handle (the
id :meth:`new_conversation_id` made at a fresh start) it uses the id the hook recorded,
else ``--last``.

Agent options (``[agents.options]`` in ``ccci.toml``):

``skip_permissions`` (bool, default ``True``)
    Pass ``--dangerously-bypass-approvals-and-sandbox`` (banner: ``permissions: YOLO
    mode``): no approval prompt, no sandbox. With ``False``, ``--full-auto`` is not used
    either (not an option of 0.169.0 or 0.171.0): set ``approval`` instead.
``approval`` (str, default unset)
    ``-a <policy>`` (``on-request`` | ``never``), used when ``skip_permissions`` is false.
``sandbox`` (str, default unset)
    ``-s <mode>`` (``read-only`` | ``workspace-write`` | ``danger-full-access``), used
    when ``skip_permissions`` is false.
``config`` (dict, default empty)
    ``-c key=value`` overrides, values written as TOML (``{"model_provider": "x"}``).
``no_daemon`` (bool, default ``True``)
    Pass ``--no-daemon``: the TUI runs its own app server as a child instead of a shared
    background daemon, so killing the pane's process tree ends the whole agent.
``session_hook`` (bool, default ``True``)
    Install the ``SessionStart`` hook above (needs the fleet's ``state_dir``). It implies
    ``--dangerously-bypass-hook-trust``, which also runs untrusted hooks of the user's or
    the repository's Codex config; set ``False`` to keep Codex's hook trust checks (ccci
    then relies on the session files).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ccci.backends import versions
from ccci.backends.base import Backend, LaunchPlan
from ccci.backends.versions import VersionedRules
from ccci.hookspecs import hookimpl
from ccci.model import AgentSpec

if TYPE_CHECKING:  # pragma: no cover
    from ccci.config import FleetConfig

#: Codex CLI version the pattern file and these launch facts were checked against (the
#: pinned version the e2e tests run; the rules used when the binary's version is unknown).
TESTED_VERSION = "0.171.0"
#: other Codex CLI versions with a pattern file and recorded screens: the e2e tests run them
#: with ``CCCI_CODEX_VERSION`` and ``.ci/setup`` installs them (0.169.0 was the pin before
#: 0.171.0; docs/agent-clis.md, "Codex CLI 0.171.0")
ALSO_TESTED = ("0.169.0",)
#: environment variable naming the Codex CLI version whose pattern file reads the screens
#: (an explicit override of the version the binary reports; also what the e2e tests run)
VERSION_ENV = "CCCI_CODEX_VERSION"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: ``rollout-2026-11-22T07-50-04-<uuid>.jsonl`` (Codex 0.169.0 and 0.171.0 session files)
ROLLOUT_RE = re.compile(
    r"^rollout-(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})-(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.jsonl$")


def binary_version(binary: str | Path = "codex", path: str | None = None) -> str | None:
    """The version a codex binary reports (:func:`ccci.backends.versions.binary_version`,
    cached per binary file)."""
    return versions.binary_version(binary, path, None)


def pattern_version_for(cli_version: str | None) -> str:
    """The tested version (a ``codex-<v>.toml`` pattern file) that reads the screens of
    ``cli_version``: the nearest one not newer than it, else the newest; for ``None``
    (version unknown) :data:`TESTED_VERSION`."""
    return versions.pattern_version_for("codex", cli_version, TESTED_VERSION)

@dataclass(frozen=True)
class CodexSession:
    """One Codex session file.

    Attributes:
        id: the session id (UUID string) ``codex resume`` takes.
        path: the ``rollout-*.jsonl`` file.
        cwd: the session's working directory (``session_meta.payload.cwd``), or ``""``.
        started: ``session_meta.timestamp`` (ISO-8601 UTC string), or ``""``.
        cli_version: the Codex version that wrote it (``session_meta.payload.cli_version``), or ``""``.
    """

    id: str
    path: Path
    cwd: str
    started: str
    cli_version: str = ""


def _toml_value(value: Any) -> str:
    """A Python value as a TOML literal for ``-c key=value`` (JSON strings, numbers and
    booleans are valid TOML; tables become inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


class CodexBackend(VersionedRules, Backend):
    """Launch, resume and read Codex CLI.

    Class attributes (see :class:`ccci.backends.base.Backend`):
        name: ``"codex"``.
        process_names: ``("codex",)``: ``npm``'s ``codex`` is a node launcher (psutil
            name ``node``, ``pane_current_command`` ``node``) that runs the native
            ``codex`` binary as its child, which runs ``codex app-server`` children
            (Codex 0.169.0, ``ps`` in docs/backends.md). :meth:`is_agent_process` accepts
            the launcher and the TUI, not the app-server children.
        exits_at_turn_end: ``False``: the TUI stays up after turns and API errors.
        supports_resume: ``True``: ``codex resume <id>`` / ``--last``.
        paste_over: ``200``: :func:`ccci.send.deliver` pastes (bracketed paste) any
            message longer than 200 characters instead of typing it: typed bursts over ~1000 characters become ``[Pasted Content N chars]`` and swallowed the Enter;
            pasted, 300 to 5000 characters arrived exactly, on the first Enter
            (Codex CLI 0.169.0, docs/backends.md "Sending messages"; the e2e test of 20
            pasted messages passes on 0.171.0 too).
        compact_command: ``"/compact"`` (Codex's slash command that summarises the
            conversation).
        executable, package, tested_versions: ``codex``, ``@openai/codex``,
            ``(TESTED_VERSION, *ALSO_TESTED)`` (``ccci doctor``).
        cli_version: explicit override of the Codex CLI version whose pattern file reads
            the screens (constructor argument or :meth:`use_cli_version`); ``None``:
            ``$CCCI_CODEX_VERSION`` if set, else the version ``binary`` reports
            (:func:`binary_version`), else :data:`TESTED_VERSION`; the file is the
            nearest tested version not newer than that (:func:`pattern_version_for`).
        binary: the Codex command (``"codex"``, found on ``$PATH``, or a path).
        detected_version: what ``binary --version`` said when the patterns were chosen
            (``None``: not asked, or no answer).
    """

    name = "codex"
    version_env = VERSION_ENV
    default_version = TESTED_VERSION
    process_names = ("codex",)
    exits_at_turn_end = False
    supports_resume = True
    paste_over = 200
    compact_command = "/compact"
    executable = "codex"
    package = "@openai/codex"
    tested_versions = (TESTED_VERSION, *ALSO_TESTED)
    cli_version: str | None = None
    binary: str = "codex"

    def __init__(self, cli_version: str | None = None, binary: str | None = None) -> None:
        super().__init__()
        self._init_versions(cli_version, binary)

    # ------------------------------------------------------------------ processes
    def is_agent_process(self, name: str, cmdline: list[str]) -> bool:
        """The node launcher (``node .../bin/codex ...``) or the native TUI ``codex``;
        never ``codex app-server ...`` (a child, or a shared daemon)."""
        args = list(cmdline or [])
        if name == "node":
            return len(args) >= 2 and Path(args[1]).name in ("codex", "codex.js")
        if name != "codex":
            return False
        return not (len(args) >= 2 and args[1] in ("app-server", "exec-server", "mcp", "sandbox"))

    # ------------------------------------------------------------------ sessions
    @staticmethod
    def codex_home(spec: AgentSpec | None = None, environ: dict[str, str] | None = None) -> Path:
        """``$CODEX_HOME``, else ``$HOME/.codex``, from ``spec.env`` first, then
        ``environ`` (default ``os.environ``)."""
        env = {**(os.environ if environ is None else environ), **((spec.env or {}) if spec else {})}
        if env.get("CODEX_HOME"):
            return Path(env["CODEX_HOME"])
        return Path(env.get("HOME") or Path.home()) / ".codex"

    @staticmethod
    def sessions(codex_home: Path, cwd: Path | str | None = None) -> list[CodexSession]:
        """Session files under ``codex_home/sessions``, oldest first (by file name time).

        :param cwd: keep only sessions whose ``session_meta`` cwd is this directory.
        """
        out: list[tuple[str, CodexSession]] = []
        root = Path(codex_home) / "sessions"
        if not root.is_dir():
            return []
        want = str(Path(cwd).resolve()) if cwd is not None else None
        for path in root.glob("*/*/*/rollout-*.jsonl"):
            m = ROLLOUT_RE.match(path.name)
            if not m:
                continue
            meta_cwd, started, version = "", "", ""
            try:
                with open(path, encoding="utf-8") as fh:
                    first = json.loads(fh.readline() or "{}")
                payload = first.get("payload") or {}
                meta_cwd = str(payload.get("cwd") or "")
                started = str(payload.get("timestamp") or first.get("timestamp") or "")
                version = str(payload.get("cli_version") or "")
            except (OSError, ValueError, AttributeError):
                pass
            if want is not None and meta_cwd and str(Path(meta_cwd).resolve()) != want:
                continue
            if want is not None and not meta_cwd:
                continue
            out.append((m.group("ts"), CodexSession(m.group("id"), path, meta_cwd, started, version)))
        out.sort(key=lambda t: t[0])
        return [s for _, s in out]

    @staticmethod
    def session_id_of_pid(pid: int) -> str | None:
        """The session id of a running Codex (the pane pid or any process of its tree):
        the ``rollout-*-<id>.jsonl`` file the native ``codex`` keeps open (Codex 0.169.0 and
        0.171.0: ``tests/e2e/test_codex_real.py`` on both).
        ``None`` when no such file is open or the process is gone."""
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        for proc in procs:
            try:
                files = proc.open_files()
            except psutil.Error:
                continue
            for f in files:
                m = ROLLOUT_RE.match(Path(f.path).name)
                if m:
                    return m.group("id")
        return None

    @staticmethod
    def session_start_file(config: "FleetConfig", agent: str) -> Path | None:
        """Where the ``SessionStart`` hook of ``agent`` writes its JSON:
        ``<state_dir>/codex/<agent>.session-start.json`` (``None`` without a state dir)."""
        state_dir = getattr(config, "state_dir", None)
        if not state_dir:
            return None
        return Path(state_dir) / "codex" / f"{agent}.session-start.json"

    @classmethod
    def hooked_session_id(cls, config: "FleetConfig", agent: str) -> str | None:
        """The ``session_id`` the last ``SessionStart`` hook of ``agent`` reported, or
        ``None`` (no hook ran yet, or its file is unreadable)."""
        path = cls.session_start_file(config, agent)
        if path is None:
            return None
        try:
            sid = json.loads(path.read_text(encoding="utf-8")).get("session_id")
        except (OSError, ValueError, AttributeError):
            return None
        return str(sid) if sid else None

    def running_version(self, spec: AgentSpec, config: "FleetConfig", conversation_id: str) -> str | None:
        """``cli_version`` from the ``session_meta`` line of the agent's session file: the
        session the ``SessionStart`` hook reported, else ``conversation_id`` when Codex
        knows it. ``None`` when neither file is there or it names no version."""
        home = self.codex_home(spec)
        for sid in (self.hooked_session_id(config, spec.name), conversation_id):
            if not sid or not UUID_RE.fullmatch(sid):
                continue  # never put anything but a UUID into the glob
            for path in sorted(home.glob(f"sessions/*/*/*/rollout-*-{sid}.jsonl")):
                try:
                    with open(path, encoding="utf-8") as fh:
                        first = json.loads(fh.readline() or "{}")
                    version = str((first.get("payload") or {}).get("cli_version") or "")
                except (OSError, ValueError, AttributeError):
                    continue
                if version:
                    return version
        return None

    def read_usage(self, spec: AgentSpec, config: "FleetConfig", conversation_id: str,
                   since: str | None = None):
        """Usage from the rollout file of the session the ``SessionStart`` hook reported
        (else ``conversation_id`` when Codex knows it): its ``token_count`` events, read
        from where the previous call stopped (:mod:`ccci.backends.codex_usage`); ``None``
        while there is no such file."""
        from ccci.backends import codex_usage

        home = self.codex_home(spec)
        for sid in (self.hooked_session_id(config, spec.name), conversation_id):
            if not sid or not UUID_RE.fullmatch(sid):
                continue  # never put anything but a UUID into the glob
            paths = sorted(home.glob(f"sessions/*/*/*/rollout-*-{sid}.jsonl"))
            if not paths:
                continue
            cursors = self.__dict__.setdefault("_usage_cursors", {})
            cur = cursors.setdefault(paths[-1], codex_usage.RolloutCursor(paths[-1]))
            while cur.read():
                pass
            return cur.reading(sid, since)
        return None

    def known_session(self, spec: AgentSpec, conversation_id: str) -> bool:
        """True when ``conversation_id`` names a session file under the agent's
        ``$CODEX_HOME``."""
        if not UUID_RE.fullmatch(conversation_id or ""):
            return False  # never put anything but a UUID into the glob
        home = self.codex_home(spec)
        return any(home.glob(f"sessions/*/*/*/rollout-*-{conversation_id}.jsonl"))

    # ------------------------------------------------------------------ launching
    def launch(
        self,
        spec: AgentSpec,
        config: "FleetConfig",
        conversation_id: str,
        resume: bool,
        prompt: str,
    ) -> LaunchPlan:
        """The command that starts (``resume=False``) or resumes Codex CLI.

        argv, executed directly by tmux (no shell):

        * fresh start: ``codex [options] [--] [PROMPT]``;
        * resume: ``codex resume [options] <id> [PROMPT]`` when ``conversation_id`` is a
          session Codex knows (:meth:`known_session`), else ``codex resume [options]
          --last [PROMPT]`` (newest session in the workdir);
        * options: ``--dangerously-bypass-approvals-and-sandbox`` (default) or
          ``-a``/``-s`` from the agent options; ``-m <spec.model>``; ``-c k=v`` for each
          ``options.config`` entry; ``--no-daemon`` unless ``options.no_daemon`` is false;
          the ``SessionStart`` hook (``--dangerously-bypass-hook-trust -c
          hooks.SessionStart=[...]``) unless ``options.session_hook`` is false or the
          config has no ``state_dir``;
        * the prompt LAST as one argument (never piped or typed); a prompt starting with
          ``-`` is preceded by ``--``.

        Environment additions: none of Codex's own (it reads ``$CODEX_HOME/config.toml``
        for the model provider and the key from the provider's ``env_key`` variable);
        ``spec.env`` is passed through.

        :param spec: the agent; ``spec.model`` (``""`` = the config's model),
            ``spec.options`` (module docstring), ``spec.env``, ``spec.workdir``.
        :param config: the fleet config; ``config.state_dir`` (Path) holds the hook's file.
        :param conversation_id: the id to resume (any string for a fresh start; the id
            Codex assigns is learned afterwards, see the module docstring).
        :param resume: continue the conversation instead of starting one.
        :param prompt: initial prompt text (``""`` for none).
        :returns: a :class:`ccci.backends.base.LaunchPlan` with ``cwd=spec.workdir``.
        """
        opts = spec.options or {}
        # read this run's screens with the rules of the Codex CLI it will start
        self.refresh_version((spec.env or {}).get("PATH"))
        flags: list[str] = []
        if bool(opts.get("skip_permissions", True)):
            flags.append("--dangerously-bypass-approvals-and-sandbox")
        else:
            if opts.get("approval"):
                flags += ["-a", str(opts["approval"])]
            if opts.get("sandbox"):
                flags += ["-s", str(opts["sandbox"])]
        if spec.model:
            flags += ["-m", spec.model]
        for key, value in (opts.get("config") or {}).items():
            flags += ["-c", f"{key}={_toml_value(value)}"]
        if bool(opts.get("no_daemon", True)):
            flags.append("--no-daemon")
        hook_file = self.session_start_file(config, spec.name) if opts.get("session_hook", True) else None
        if hook_file is not None:
            hook_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Codex runs hook commands through the shell; the path is quoted for it
            hook = {"type": "command", "command": f"cat > {shlex.quote(str(hook_file))}", "timeout": 10}
            flags += ["--dangerously-bypass-hook-trust",
                      "-c", f"hooks.SessionStart={_toml_value([{'hooks': [hook]}])}"]
        argv = ["codex"]
        if resume:
            argv.append("resume")
            argv += flags
            hooked = self.hooked_session_id(config, spec.name)
            if self.known_session(spec, conversation_id):
                argv.append(conversation_id)
            elif hooked and self.known_session(spec, hooked):
                argv.append(hooked)
            else:
                argv.append("--last")
        else:
            argv += flags
        if prompt:
            if prompt.startswith("-"):
                argv.append("--")
            argv.append(prompt)
        return LaunchPlan(argv=argv, env=dict(spec.env or {}), cwd=spec.workdir,
                          conversation_id=conversation_id)

    def new_conversation_id(self) -> str:
        """A fresh ccci handle (UUID4 string). Codex picks its own session id; this
        handle only marks "a conversation was started" until the real id is known."""
        return str(uuid.uuid4())


@hookimpl
def ccci_register_backends():
    return [CodexBackend()]
