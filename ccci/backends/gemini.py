"""The ``gemini`` backend: Google Gemini CLI (``@google/gemini-cli``) in a tmux pane.

Registered through ``ccci_register_backends`` like any third-party backend. Facts used
here were measured with Gemini CLI 0.61.0 offline (``docs/backends.md``, "Gemini CLI");
the screen rules live in ``ccci/patterns/gemini-0.61.0.toml`` (checked against
``tests/golden/gemini-0.61.0/``).

Gemini CLI takes a session id of our choosing (``--session-id <uuid>``) and resumes it
with ``--resume <uuid>``; on exit it prints ``To resume this session: gemini --resume
<uuid>``. Sessions are stored as
``$HOME/.gemini/tmp/<project>/chats/session-<local time>-<first 8 hex of id>.jsonl``
whose first line holds ``sessionId`` (:meth:`GeminiBackend.sessions`).

Agent options (``[agents.options]`` in ``ccci.toml``):

``skip_permissions`` (bool, default ``True``)
    Pass ``--yolo`` (footer ``YOLO Ctrl+Y``): every tool call is approved.
``approval_mode`` (str, default unset)
    ``--approval-mode <mode>`` (``default`` | ``auto_edit`` | ``yolo`` | ``plan``),
    used instead of ``--yolo`` when ``skip_permissions`` is false.
``skip_trust`` (bool, default ``True``)
    Pass ``--skip-trust``: trust the workdir for this session, so the folder-trust
    dialog never blocks a fresh workdir.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ccci.backends.base import Backend, LaunchPlan
from ccci.hookspecs import hookimpl
from ccci.model import AgentSpec

if TYPE_CHECKING:  # pragma: no cover
    from ccci.config import FleetConfig

#: Gemini CLI version the pattern file and these launch facts were checked against.
TESTED_VERSION = "0.61.0"
SESSION_FILE_RE = re.compile(r"^session-(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}-\d{2})-(?P<short>[0-9a-f]{8})\.jsonl$")


@dataclass(frozen=True)
class GeminiSession:
    """One Gemini CLI session file.

    Attributes:
        id: ``sessionId`` (UUID string) ``--resume`` takes.
        path: the ``session-*.jsonl`` file.
        project: the project directory name under ``~/.gemini/tmp/``.
        started: ``startTime`` (ISO-8601 UTC string), or ``""``.
    """

    id: str
    path: Path
    project: str
    started: str


class GeminiBackend(Backend):
    """Launch, resume and read Gemini CLI.

    Class attributes (see :class:`ccci.backends.base.Backend`):
        name: ``"gemini"``.
        process_names: ``("gemini",)`` for a native build; the npm CLI is node
            (``node .../bin/gemini``, which relaunches itself as a ``node
            --max-old-space-size=N .../bin/gemini`` child; ``pane_current_command`` reads
            ``node``, Gemini CLI 0.61.0), recognised by :meth:`is_agent_process`.
        exits_at_turn_end: ``False``: the interactive CLI stays up after turns and errors.
        supports_resume: ``True``: ``gemini --resume <uuid>``.
        paste_over: ``200``: :func:`ccci.send.deliver` pastes (bracketed paste) any
            message longer than 200 characters instead of typing it: it took up to 3 s to draw 1500 typed characters, and Enters sent meanwhile submitted parts or copies;
            pasted, 300 to 5000 characters arrived exactly, on the first Enter
            (Gemini CLI 0.61.0, docs/backends.md "Sending messages").
        compact_command: ``"/compress"`` (Gemini CLI's slash command that summarises the
            chat; it has no ``/compact``).
    """

    name = "gemini"
    process_names = ("gemini",)
    exits_at_turn_end = False
    supports_resume = True
    paste_over = 200
    compact_command = "/compress"
    executable = "gemini"
    package = "@google/gemini-cli"
    tested_versions = (TESTED_VERSION,)

    def is_agent_process(self, name: str, cmdline: list[str]) -> bool:
        """``gemini`` itself, or node running ``.../bin/gemini`` (either the launcher
        or its ``--max-old-space-size`` child)."""
        if name in self.process_names:
            return True
        if name != "node":
            return False
        for arg in (cmdline or [])[1:4]:
            if arg.startswith("--"):
                continue
            return Path(arg).name in ("gemini", "gemini.js")
        return False

    # ------------------------------------------------------------------ sessions
    @staticmethod
    def gemini_home(spec: AgentSpec | None = None, environ: dict[str, str] | None = None) -> Path:
        """``$HOME/.gemini`` with ``HOME`` from ``spec.env`` first, then ``environ``."""
        env = {**(os.environ if environ is None else environ), **((spec.env or {}) if spec else {})}
        return Path(env.get("HOME") or Path.home()) / ".gemini"

    @staticmethod
    def sessions(gemini_home: Path) -> list[GeminiSession]:
        """Session files under ``gemini_home/tmp/*/chats``, oldest first."""
        out: list[tuple[str, GeminiSession]] = []
        for path in Path(gemini_home).glob("tmp/*/chats/session-*.jsonl"):
            m = SESSION_FILE_RE.match(path.name)
            if not m:
                continue
            try:
                with open(path, encoding="utf-8") as fh:
                    head = json.loads(fh.readline() or "{}")
            except (OSError, ValueError):
                continue
            sid = str(head.get("sessionId") or "")
            if sid:
                out.append((m.group("ts"), GeminiSession(sid, path, path.parent.parent.name,
                                                         str(head.get("startTime") or ""))))
        out.sort(key=lambda t: t[0])
        return [s for _, s in out]

    def read_usage(self, spec: AgentSpec, config: "FleetConfig", conversation_id: str,
                   since: str | None = None):
        """Usage from the session file whose header names ``conversation_id`` (the newest
        when several): its messages' ``tokens`` (:mod:`ccci.backends.gemini_usage`), read
        from where the previous call stopped; ``None`` while there is no such file."""
        from ccci.backends import gemini_usage

        cursors = self.__dict__.setdefault("_usage_cursors", {})
        path = self.__dict__.setdefault("_usage_paths", {}).get(conversation_id)
        if path is None or not path.exists():
            found = [s.path for s in self.sessions(self.gemini_home(spec)) if s.id == conversation_id]
            if not found:
                return None
            path = self._usage_paths[conversation_id] = found[-1]
        cur = cursors.setdefault(path, gemini_usage.SessionCursor(path))
        while cur.read():
            pass
        return cur.reading(conversation_id, since)

    # ------------------------------------------------------------------ launching
    def launch(
        self,
        spec: AgentSpec,
        config: "FleetConfig",
        conversation_id: str,
        resume: bool,
        prompt: str,
    ) -> LaunchPlan:
        """The command that starts (``resume=False``) or resumes Gemini CLI.

        argv, executed directly by tmux (no shell):

        * fresh start: ``gemini --session-id <uuid> ...`` (the id ccci chose is then the
          session's id everywhere: file header, exit summary, ``--resume``);
        * resume: ``gemini --resume <uuid> ...``;
        * ``--yolo`` unless ``options.skip_permissions`` is false (then
          ``--approval-mode <options.approval_mode>`` when set);
        * ``--skip-trust`` unless ``options.skip_trust`` is false;
        * ``-m <spec.model>`` when set;
        * the prompt LAST as one positional argument: Gemini CLI 0.61.0 runs a
          positional prompt in interactive mode ("Positional arguments now default to
          interactive mode"); a prompt starting with ``-`` is preceded by ``--``.

        :param spec: the agent.
        :param config: the fleet config (not read).
        :param conversation_id: a UUID string (``--session-id`` needs one).
        :param resume: continue ``conversation_id``.
        :param prompt: initial prompt text (``""`` for none).
        :returns: a :class:`ccci.backends.base.LaunchPlan` with ``cwd=spec.workdir`` and
            the id in canonical lower-case form.
        :raises ValueError: when ``conversation_id`` is not a UUID.
        """
        try:
            session_id = str(uuid.UUID(str(conversation_id)))
        except ValueError:
            raise ValueError(
                f"gemini backend: conversation id {conversation_id!r} for agent {spec.name!r} is not a UUID; "
                "Gemini CLI's --session-id/--resume need one (use GeminiBackend.new_conversation_id())"
            ) from None
        opts = spec.options or {}
        argv = ["gemini", "--resume" if resume else "--session-id", session_id]
        if bool(opts.get("skip_permissions", True)):
            argv.append("--yolo")
        elif opts.get("approval_mode"):
            argv += ["--approval-mode", str(opts["approval_mode"])]
        if bool(opts.get("skip_trust", True)):
            argv.append("--skip-trust")
        if spec.model:
            argv += ["-m", spec.model]
        if prompt:
            if prompt.startswith("-"):
                argv.append("--")
            argv.append(prompt)
        return LaunchPlan(argv=argv, env=dict(spec.env or {}), cwd=spec.workdir, conversation_id=session_id)


@hookimpl
def ccci_register_backends():
    return [GeminiBackend()]
