"""Which rule set reads a CLI's screens: the version its binary reports, mapped to the
nearest tested version not newer (shared by the backends whose screens differ from one
CLI version to the next: Claude Code, Codex CLI).

:class:`VersionedRules` is a mixin for a :class:`ccci.backends.base.Backend` subclass
that ships one pattern file per tested version (``ccci/patterns/<name>-<version>.toml``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ccci import patterns as patterns_mod

VERSION_TIMEOUT_S = 15  #: limit for ``<cli> --version`` (0.06 s warm for claude, 0.11 s for codex here)
#: ``2.1.332 (Claude Code)`` / ``codex-cli 0.171.0`` -> the dotted version
_VERSION_RE = re.compile(r"(?<![\d.])(\d+\.\d+\.\d+)(?![\d.])")
#: ``(real path, mtime_ns, size) -> version or None``: one ``--version`` run per binary file
_VERSION_CACHE: dict[tuple[str, int, int], str | None] = {}


def binary_version(binary: str | Path, path: str | None = None, env: dict[str, str] | None = None) -> str | None:
    """The version a CLI binary reports with ``--version`` (the first ``N.N.N`` it prints).

    Runs once per binary file (cached by real path, mtime and size, so an upgrade in
    place is noticed), argv only, stdin closed.

    :param binary: a command name looked up on ``path`` (default ``$PATH``) or a path.
    :param path: a ``PATH`` value to search instead of the process's.
    :param env: variables added to the environment of the run (e.g. no self-update).
    :returns: the version, or ``None`` when the binary is missing, fails, times out
        (:data:`VERSION_TIMEOUT_S` seconds; not cached, a run under load may pass later)
        or prints no version.
    """
    name = str(binary)
    found = name if os.sep in name else shutil.which(name, path=path)
    if not found:
        return None
    real = os.path.realpath(found)
    try:
        st = os.stat(real)
    except OSError:
        return None
    key = (real, st.st_mtime_ns, st.st_size)
    if key in _VERSION_CACHE:
        return _VERSION_CACHE[key]
    try:
        res = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S,
                             stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        m = _VERSION_RE.search(res.stdout) if res.returncode == 0 else None
        version = m.group(1) if m else None
    except (OSError, subprocess.TimeoutExpired):
        return None
    _VERSION_CACHE[key] = version
    return version


def pattern_version_for(backend: str, cli_version: str | None, default: str) -> str:
    """The tested version (a ``<backend>-<v>.toml`` pattern file) that reads the screens of
    version ``cli_version`` of the CLI: the nearest one not newer than it, else the newest;
    ``default`` (the pinned version) when the version is unknown."""
    if not cli_version:
        return default
    return patterns_mod.choose(backend, cli_version).stem[len(backend) + 1:]


class VersionedRules:
    """Mixin: choose the pattern file by the CLI version, asked of the binary at launch.

    The subclass sets :attr:`version_env` (an environment variable that overrides the
    detected version, e.g. ``CCCI_CLAUDE_VERSION``), :attr:`default_version` (its pinned
    tested version), :attr:`binary` and optionally :attr:`version_run_env`; and calls
    :meth:`_init_versions` from its ``__init__``.

    Attributes:
        cli_version: explicit override (constructor argument or :meth:`use_cli_version`).
        detected_version: what the binary said when the patterns were chosen (``None``:
            not asked, or no answer).
    """

    name: str = ""
    version_env: str = ""
    default_version: str = ""
    binary: str = ""
    version_run_env: dict[str, str] = {}
    cli_version: str | None = None

    def _init_versions(self, cli_version: str | None, binary: str | None) -> None:
        if cli_version:
            self.cli_version = cli_version
        if binary:
            self.binary = binary
        self.detected_version: str | None = None
        self._chosen: str | None = None  # pattern version in force, once chosen

    def choose_version(self, path: str | None = None) -> str:
        """Which pattern file version reads the screens: :attr:`cli_version` if set, else
        ``$<version_env>``, else what :attr:`binary` reports (looked up on ``path``,
        default ``$PATH``), else :attr:`default_version`; mapped to the nearest tested
        version not newer (:func:`pattern_version_for`)."""
        if self.cli_version:
            return pattern_version_for(self.name, self.cli_version, self.default_version)
        env = os.environ.get(self.version_env, "").strip() if self.version_env else ""
        if env:
            return pattern_version_for(self.name, env, self.default_version)
        self.detected_version = binary_version(self.binary, path, self.version_run_env)
        return pattern_version_for(self.name, self.detected_version, self.default_version)

    def pattern_version(self) -> str:
        """The pattern file version in force (chosen once by :meth:`choose_version`,
        again by :meth:`refresh_version`)."""
        if self._chosen is None:
            self._chosen = self.choose_version()
        return self._chosen

    def use_cli_version(self, version: str | None) -> None:
        """Explicit override: read screens as those of CLI ``version`` (``None``: back to
        detection). User overrides stay."""
        self._chosen = None
        super().use_cli_version(version)  # type: ignore[misc]

    def refresh_version(self, path: str | None = None) -> str:
        """Choose the pattern file again (the binary may have been upgraded since; its
        ``--version`` run is cached per binary file): ``launch`` calls it with the agent's
        ``PATH``. User overrides stay.

        :returns: the pattern file version now in force.
        """
        version = self.choose_version(path)
        if version != self._chosen:
            self._chosen = version
            self._patterns = None
        return version
