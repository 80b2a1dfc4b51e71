"""The pinned agent CLIs the end-to-end tests run, installed with npm into one prefix.

Both e2e fixtures (``claude_bin``, ``opencode_bin``) and ``.ci/setup`` use this module, so
there is one install step, one prefix (``<repo>/.cache/npm``) and one lock file
(``<repo>/.cache/npm-install.lock``: parallel test runs install once).

=============  ==============================  =========  ==========================
name           npm package                     version    binary (``node_modules/.bin``)
=============  ==============================  =========  ==========================
``claude``     ``@anthropic-ai/claude-code``   2.1.332    ``claude``
``opencode``   ``opencode-ai``                 1.18.33    ``opencode``
``codex``      ``@openai/codex``               0.171.0    ``codex``
``gemini``     ``@google/gemini-cli``          0.61.0     ``gemini``
=============  ==============================  =========  ==========================

The versions are the ones the backends' pattern files were recorded with
(:data:`ccci.backends.claude.TESTED_VERSION`, :data:`ccci.backends.opencode.TESTED_VERSION`,
:data:`ccci.backends.codex.TESTED_VERSION`). :data:`ALSO_PINNED` names other versions the
tests run too (Claude Code 2.1.197, Codex CLI 0.169.0), each installed into a prefix of its
own (:func:`version_prefix`).

Command line (``.ci/setup``)::

    python -m ccci.testing.agent_clis [--prefix DIR] [NAME ...]

installs the named CLIs (default: all), with their :data:`ALSO_PINNED` versions, when
missing and prints one line per install; exit status 1 when an install failed (offline,
npm missing).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PREFIX = REPO / ".cache" / "npm"


@dataclass(frozen=True)
class PinnedCli:
    """One pinned npm CLI.

    Attributes:
        package: npm package name.
        version: exact version installed and expected from ``--version``.
        binary: the executable's name under ``node_modules/.bin``.
        env: environment for running ``--version`` (no self-update of a pinned CLI).
    """

    package: str
    version: str
    binary: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        """``package@version`` for ``npm install``."""
        return f"{self.package}@{self.version}"


PINNED: dict[str, PinnedCli] = {
    "claude": PinnedCli("@anthropic-ai/claude-code", "2.1.332", "claude", (("DISABLE_AUTOUPDATER", "1"),)),
    "opencode": PinnedCli("opencode-ai", "1.18.33", "opencode", (("OPENCODE_DISABLE_AUTOUPDATE", "1"),)),
    "codex": PinnedCli("@openai/codex", "0.171.0", "codex"),
    "gemini": PinnedCli("@google/gemini-cli", "0.61.0", "gemini"),
}


#: other versions the tests run too, installed next to the pin (``.cache/npm-<name>-<version>``)
#: and run by the e2e tests with ``CCCI_CLAUDE_VERSION=<version>`` / ``CCCI_CODEX_VERSION=<version>``
ALSO_PINNED: dict[str, tuple[str, ...]] = {"claude": ("2.1.197",), "codex": ("0.169.0",)}


class CliUnavailable(RuntimeError):
    """The CLI is not installed and could not be installed (npm missing, offline, or a
    different version answered); ``str()`` says which."""


def cli_version(path: Path, cli: PinnedCli) -> str:
    """What ``path --version`` prints (stripped), ``""`` when it cannot run (30 s limit)."""
    try:
        res = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, **dict(cli.env)})
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout.strip()


def _is_version(printed: str, cli: PinnedCli) -> bool:
    """``--version`` output names the pinned version as one word (Claude Code prints
    ``2.1.197 (Claude Code)``, Codex ``codex-cli 0.171.0``, the others the bare version)."""
    return cli.version in printed.split()


def _ok(path: Path, cli: PinnedCli) -> bool:
    return path.exists() and _is_version(cli_version(path, cli), cli)


def version_prefix(name: str, version: str) -> Path:
    """The npm prefix of a CLI at a version other than its pin:
    ``<repo>/.cache/npm-<name>-<version>`` (so the pinned install in ``.cache/npm`` stays)."""
    return REPO / ".cache" / f"npm-{name}-{version}"


def ensure_cli(name: str, prefix: Path | None = None, version: str | None = None) -> Path:
    """The pinned CLI ``name`` (a key of :data:`PINNED`), installed with
    ``npm install --prefix PREFIX`` when missing or at another version.

    :param name: ``"claude"``, ``"opencode"``, ``"codex"`` or ``"gemini"``.
    :param prefix: npm prefix (default ``<repo>/.cache/npm``; for a ``version`` other
        than the pin, :func:`version_prefix`).
    :param version: another version of the same package (e.g. a newer Claude Code to
        record its screens); default the pin.
    :returns: the path of ``PREFIX/node_modules/.bin/<binary>``.
    :raises KeyError: for an unknown name.
    :raises CliUnavailable: when npm is missing, the install fails (up to 600 s), or the
        installed binary reports another version.
    """
    cli = PINNED[name]
    if version and version != cli.version:
        cli = replace(cli, version=version)
        prefix = Path(prefix or version_prefix(name, version))
    prefix = Path(prefix or DEFAULT_PREFIX)
    path = prefix / "node_modules" / ".bin" / cli.binary
    if _ok(path, cli):
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise CliUnavailable(f"npm is not installed: cannot install {cli.spec}")
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / "npm-install.lock", "w") as lock:  # parallel runs install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ok(path, cli):
            res = subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", cli.spec],
                capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise CliUnavailable(f"npm install {cli.spec} failed (offline?): {res.stderr.strip()[-500:]}")
    version = cli_version(path, cli)
    if not _is_version(version, cli):
        raise CliUnavailable(f"{path} --version printed {version!r}, expected {cli.version}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ccci.testing.agent_clis",
                                 description="Install the pinned agent CLIs for the end-to-end tests.")
    ap.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX, help=f"npm prefix (default {DEFAULT_PREFIX})")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"CLIs to install: {', '.join(PINNED)} (default: all)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in PINNED]
    if unknown:
        ap.error(f"unknown CLI {unknown[0]!r}; use one of {', '.join(PINNED)}")
    rc = 0
    for name in args.names or list(PINNED):
        try:
            path = ensure_cli(name, args.prefix)
            print(f"{PINNED[name].spec}: {path}")
        except CliUnavailable as exc:
            print(f"{PINNED[name].spec}: NOT installed: {exc}", file=sys.stderr)
            rc = 1
        for version in ALSO_PINNED.get(name, ()):
            spec = f"{PINNED[name].package}@{version}"
            try:
                print(f"{spec}: {ensure_cli(name, None, version)}")
            except CliUnavailable as exc:
                print(f"{spec}: NOT installed: {exc}", file=sys.stderr)
                rc = 1
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
