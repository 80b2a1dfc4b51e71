"""The ``scripted`` backend: ccci's own stand-in agent (:mod:`ccci.backends.scripted.scripted_agent`).

Registered through ``ccci_register_backends`` like any third-party backend. Agent
options (``[agents.options]`` in ``ccci.toml``): ``turn_seconds`` (float, busy time of a
turn, default 2), ``wait_seconds`` (declared wait after a turn, default 600),
``done_after`` (builder: after this many claims in a phase, write ``## DONE`` in
``STATUS-<phase>.md``; 0 = never), ``exit_after`` (seconds: the agent exits that long
after every start, a crash loop for the fault suite; 0 = never), ``tag`` (commit subjects
read ``claim(TAG step N)``, so per-pair ``[[handoff]]`` rules can route them), ``journal``
(true: the agent appends a JSON line per start and per turn to
``<state_dir>/scripted/journal.jsonl``; the chaos soak reads it).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ccci.backends.base import Backend, LaunchPlan
from ccci.hookspecs import hookimpl
from ccci.model import AgentSpec

if TYPE_CHECKING:  # pragma: no cover
    from ccci.config import FleetConfig


class ScriptedBackend(Backend):
    name = "scripted"
    process_names = ("python3", "python", "ccci-scripted-agent")
    compact_command = "/compact"

    def is_agent_process(self, name: str, cmdline: list[str]) -> bool:
        return "ccci.backends.scripted.scripted_agent" in cmdline

    def control_file(self, config: "FleetConfig", agent: str):
        """Path of the agent's fault-cue file (see :mod:`ccci.backends.scripted.scripted_agent`)."""
        return config.state_dir / "scripted" / f"{agent}.control"

    def journal_file(self, config: "FleetConfig"):
        """Path of the agents' shared turn journal (option ``journal``)."""
        return config.state_dir / "scripted" / "journal.jsonl"

    def launch(self, spec: AgentSpec, config: "FleetConfig", conversation_id: str, resume: bool, prompt: str) -> LaunchPlan:
        opts = spec.options
        argv = [
            sys.executable, "-m", "ccci.backends.scripted.scripted_agent",
            "--name", spec.name,
            "--role", spec.handoff_role or spec.role.value,
            "--conversation", conversation_id,
            "--state-dir", str(config.state_dir / "scripted" / "conversations"),
            "--workdir", str(spec.workdir),
            "--control", str(self.control_file(config, spec.name)),
            "--turn-seconds", str(opts.get("turn_seconds", 2)),
            "--wait-seconds", str(opts.get("wait_seconds", 600)),
            "--done-after", str(opts.get("done_after", 0)),
        ]
        if opts.get("exit_after"):
            argv += ["--exit-after", str(opts["exit_after"])]
        if opts.get("tag"):
            argv += ["--tag", str(opts["tag"])]
        if opts.get("journal"):
            argv += ["--journal", str(self.journal_file(config))]
        if resume:
            argv.append("--resume")
        if prompt:
            argv += ["--", prompt]
        return LaunchPlan(argv=argv, env={"PYTHONUNBUFFERED": "1"}, cwd=spec.workdir, conversation_id=conversation_id)


@hookimpl
def ccci_register_backends():
    return [ScriptedBackend()]
