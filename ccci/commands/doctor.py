"""``ccci doctor``: is each agent's CLI installed, and is it a version ccci's rules know?

Per agent (or, outside a fleet, per registered backend): the backend, whether its CLI
(:attr:`ccci.backends.base.Backend.executable`) is on ``PATH`` (the agent's own ``PATH``
from ``env`` when it sets one), what ``<cli> --version`` prints (run as an argv list,
never through a shell, with :data:`VERSION_TIMEOUT_S`), the version the screen rules in
force are for, whether the installed version is one the backend was checked against
(:meth:`ccci.backends.base.Backend.versions_tested`), and one line of advice when not.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ccci.backends.base import Backend

VERSION_TIMEOUT_S = 10.0  #: seconds ``<cli> --version`` may take
OUTPUT_CHARS = 200  #: characters of the version output kept
VERSION_RE = re.compile(r"\b(\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.]+)?)\b")


def probe_version(path: str, args: tuple[str, ...], env: dict[str, str] | None = None,
                  timeout: float = VERSION_TIMEOUT_S) -> tuple[str, str]:
    """Run ``path *args`` (no shell, stdin closed) and read a version from its output.

    :returns: ``(output, error)``: the first non-blank output line (stdout, else stderr,
        at most :data:`OUTPUT_CHARS`), and ``""`` or a one-line reason it could not run.
    """
    shown = f"`{os.path.basename(path)} {' '.join(args)}`"
    try:
        # its own process group, so a time-out ends the CLI and anything it started (by the group's id)
        proc = subprocess.Popen([path, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    except OSError as exc:
        return "", f"cannot run {path}: {exc.strerror or exc}"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        return "", f"{shown} did not answer within {timeout:g}s"
    for stream in (out, err):
        for line in stream.decode("utf-8", "replace").splitlines():
            if line.strip():
                return line.strip()[:OUTPUT_CHARS], ""
    return "", f"{shown} printed nothing (exit status {proc.returncode})"


def check_backend(backend: "Backend", agent: str | None = None, agent_env: dict[str, str] | None = None,
                  timeout: float = VERSION_TIMEOUT_S) -> dict[str, Any]:
    """One row of ``ccci doctor``.

    :param backend: the agent's backend.
    :param agent: the agent's name (``None`` outside a fleet).
    :param agent_env: the agent's ``env`` from ``ccci.toml`` (its ``PATH`` is searched when set).
    :param timeout: seconds the version command may take.
    :returns: ``{"agent", "backend", "executable", "path", "version_output", "version",
        "rules_version", "tested_versions", "tested", "ok", "advice"}``; ``tested`` is
        ``None`` when there is no CLI or no version could be read; ``ok`` is ``False``
        when the CLI is missing, unreadable or not a tested version.
    """
    tested_versions = list(backend.tested_versions)
    row: dict[str, Any] = {
        "agent": agent, "backend": backend.name, "executable": backend.executable or None, "path": None,
        "version_output": None, "version": None, "rules_version": None,
        "tested_versions": tested_versions, "tested": None, "ok": True, "advice": "",
    }
    if not backend.executable:
        return _with_rules(row, backend, None)  # the backend runs no separately installed CLI (scripted)
    exe = backend.executable
    env = dict(os.environ)
    env.update(agent_env or {})
    path = shutil.which(exe, path=env.get("PATH"))
    install = f"npm install -g {backend.package}@{tested_versions[0]}" if backend.package and tested_versions else ""
    if path is None:
        row["ok"] = False
        row["advice"] = (f"{exe} is not on PATH; install it" + (f" ({install})" if install else "")
                         + " or put its directory on PATH")
        return _with_rules(row, backend, None)
    row["path"] = path
    output, error = probe_version(path, tuple(backend.version_args), env, timeout)
    row["version_output"] = output or None
    m = VERSION_RE.search(output)
    if error or m is None:
        row["ok"] = False
        row["advice"] = error or f"no version number in {exe}'s answer {output!r}; check that {path} is the {exe} CLI"
        return _with_rules(row, backend, None)
    version = m.group(1)
    row["version"] = version
    row["tested"] = version in tested_versions
    if not row["tested"]:
        row["ok"] = False
        row["advice"] = (f"{exe} {version} is not a version ccci's {backend.name} rules were checked against "
                         f"({', '.join(tested_versions) or 'none'}); "
                         + (f"pin it: {install}" if install else
                            f"install {exe} {tested_versions[0]}" if tested_versions else "install a tested version")
                         + ", or watch `ccci events` for rules_drift while running it")
    return _with_rules(row, backend, version)


def _with_rules(row: dict[str, Any], backend: "Backend", version: str | None) -> dict[str, Any]:
    """Fill in the rules version in force for the CLI ``version`` found (a backend that
    picks its rules by version is told it, so it does not run the CLI again; without a
    version, its first tested one); a rule set that does not load is a finding."""
    try:
        if hasattr(backend, "use_cli_version") and (version or row["tested_versions"]):
            backend.use_cli_version(version or row["tested_versions"][0])
        if not row["tested_versions"]:
            row["tested_versions"] = list(backend.versions_tested())
        row["rules_version"] = backend.rules_version or None
    except Exception as exc:  # noqa: BLE001 - a broken pattern set is a finding, not a crash
        row["ok"] = False
        row["advice"] = (f"{backend.name}: its screen rules do not load ({type(exc).__name__}: {str(exc)[:120]}); "
                         "fix or remove the pattern overrides")
    return row
