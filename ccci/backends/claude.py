"""The ``claude`` backend: Claude Code (``@anthropic-ai/claude-code``) in a tmux pane.

Registered through ``ccci_register_backends`` like any third-party backend. Facts used
here were measured with Claude Code 2.1.197 and are written down in
``/work/shared/notes/agent-cli-facts.md``; the screen rules live in
``ccci/patterns/claude-2.1.197.toml`` (checked against ``tests/golden/claude-2.1.197/``).

Agent options (``[agents.options]`` in ``ccci.toml``):

``skip_permissions`` (bool, default ``True``)
    Pass ``--dangerously-skip-permissions`` so tool calls never stop at a permission
    dialog. The footer then always reads ``bypass permissions on``.
``remote_control`` (str or bool, default off)
    Pass ``--remote-control NAME``. A string is the name; ``True`` uses the agent's
    tmux session name ``ccci-<fleet>-<agent>``.
``settings`` (str, default off)
    Pass ``--settings <file-or-json>``: extra settings (e.g. lifecycle hooks) for this
    run only (agent-cli-facts.md, "What a supervisor can read").
"""
from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

from ccci.backends.base import Backend, LaunchPlan
from ccci.hookspecs import hookimpl
from ccci.model import AgentSpec

if TYPE_CHECKING:  # pragma: no cover
    from ccci.config import FleetConfig

#: Claude Code version the pattern file and these launch facts were checked against.
TESTED_VERSION = "2.1.197"


class ClaudeBackend(Backend):
    """Launch, resume and read Claude Code.

    Class attributes (see :class:`ccci.backends.base.Backend`):
        name: ``"claude"``.
        process_names: ``("claude",)``: the pane pid is the ``claude`` process itself
            (one native binary; tools run as ``bash -c`` children) and
            ``pane_current_command`` reads ``claude`` even while a tool runs
            (agent-cli-facts.md; captures ``30_ps_process_tree.txt``,
            ``33_ps_during_bash_tool.txt``).
        exits_at_turn_end: ``False``: the interactive CLI stays alive after a turn and
            after every API failure (agent-cli-facts.md, "API failures").
        supports_resume: ``True``: ``claude --resume <id>`` restores the conversation,
            offline too.
        compact_command: ``"/compact"`` (the CLI's own hint after a context-limit error:
            ``Context limit reached · /compact or /clear to continue``).
        cli_version: ``None``: the newest shipped ``claude-<version>.toml``
            (``2.1.197`` today, :data:`TESTED_VERSION`).
    """

    name = "claude"
    process_names = ("claude",)
    exits_at_turn_end = False
    supports_resume = True
    compact_command = "/compact"

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
        * ``--settings <value>`` when ``options.settings`` is set;
        * the prompt LAST, as one positional argument (never piped, never typed: typed
          text of 100+ characters loses its Enter, agent-cli-facts.md "Delivering a
          message"). A prompt starting with ``-`` is preceded by ``--`` so it is not read
          as an option.

        Environment additions: ``DISABLE_AUTOUPDATER=1`` (no self-update of a pinned CLI);
        ``IS_SANDBOX=1`` when running as root with skip-permissions, without which Claude
        Code 2.1.197 prints "cannot be used with root/sudo privileges" and exits 1
        (agent-cli-facts.md); then ``spec.env`` on top (the user's values win).

        :param spec: the agent; ``spec.model`` (str, ``""`` = CLI default),
            ``spec.options`` (see the module docstring), ``spec.env``, ``spec.workdir``.
        :param config: the fleet config; only ``config.name`` (str, fleet name) is read,
            for the default remote-control name.
        :param conversation_id: a UUID string (Claude Code's ``--session-id`` and
            ``--resume`` take UUIDs); :meth:`new_conversation_id` makes one.
        :param resume: continue ``conversation_id`` instead of starting it.
        :param prompt: initial prompt text (``""`` for none, e.g. on a plain resume).
        :returns: a :class:`ccci.backends.base.LaunchPlan` with ``cwd=spec.workdir`` and
            ``conversation_id`` in canonical lower-case UUID form.
        :raises ValueError: when ``conversation_id`` is not a UUID.
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

        argv = ["claude", "--resume" if resume else "--session-id", session_id]
        if skip_permissions:
            argv.append("--dangerously-skip-permissions")
        if spec.model:
            argv += ["--model", spec.model]
        remote = opts.get("remote_control")
        if remote:
            remote_name = remote if isinstance(remote, str) else f"ccci-{config.name}-{spec.name}"
            argv += ["--remote-control", remote_name]
        if opts.get("settings"):
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
