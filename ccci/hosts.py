"""Reach the fleet's other hosts with OpenSSH: ``ssh HOST ccci --fleet DIR --host NAME --local ARGS``.

A fleet spread over machines has one ``ccci watch`` per host (``[[hosts]]`` in
``ccci.toml``, ``host =`` on each agent); the git origin is the only channel between the
watchers. The commands that give one view of the whole fleet (``ccci status``,
``events``, ``send``, ``start``, ``stop``, ``logs``, ``ccci hosts``) run the same command
on each other host through this module:

* ``ssh`` is run as an argv list (never a local shell); the remote command is one string
  that the remote login shell parses, so every word is quoted with :func:`shlex.quote`
  (a leading ``~/`` stays the remote home: ``"$HOME"/...``).
* ``-o BatchMode=yes`` (never a password prompt), ``ConnectTimeout`` (HostSpec.connect_timeout,
  default 5 s), ``ServerAliveInterval=5``/``ServerAliveCountMax=2`` (a cut link ends a
  shared connection within ~10 s) and an overall timeout per call (HostSpec.timeout,
  default 20 s) after which the ssh client is killed.
* Connection reuse: ``ControlMaster=auto`` with ``ControlPersist=60`` (seconds) and the
  control sockets under ``<state_dir>/ssh/`` (mode 0700; ``/tmp/ccci-ssh-<uid>-<hash>/``
  when that path is too long for a unix socket, 108 bytes on Linux). Output is read
  from temporary files, not pipes: the backgrounded master keeps the first client's
  stdio open, so reading a pipe to EOF would wait for ``ControlPersist``.
* A host that does not answer is a :class:`Reply` with ``ok=False`` and a one-line
  ``error`` (never an exception): ssh's exit status 255 (connection or authentication
  failure), a timeout, or a missing ``ssh`` binary.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

from ccci.config import FleetConfig, HostSpec

#: seconds a shared ssh connection stays open after its last use (ControlPersist)
CONTROL_PERSIST_S = 60
#: ssh exits with 255 when it could not connect or authenticate (ssh(1), "EXIT STATUS")
SSH_FAILED = 255


@dataclass
class Reply:
    """What one remote call gave.

    Attributes:
        host: the host name.
        ok: ``True`` when the host answered (whatever ccci's own exit status).
        code: the remote command's exit status (``None`` when the host did not answer).
        stdout, stderr: the remote command's output (text, UTF-8, invalid bytes replaced).
        error: one line saying why the host did not answer (``""`` when ``ok``).
        seconds: wall time of the call.
    """

    host: str
    ok: bool
    code: int | None
    stdout: str = ""
    stderr: str = ""
    error: str = ""
    seconds: float = 0.0

    def json(self) -> Any:
        """``stdout`` parsed as JSON. :raises ValueError: when it is not JSON."""
        return json.loads(self.stdout)


def control_dir(cfg: FleetConfig) -> Path:
    """The directory of the fleet's ssh control sockets (created, mode 0700)."""
    d = cfg.state_dir / "ssh"
    # ControlPath %C is 40 hex characters; a unix socket path holds at most 107 bytes
    if len(str(d)) + 42 > 100:
        h = hashlib.sha1(str(cfg.state_dir).encode()).hexdigest()[:12]
        d = Path(tempfile.gettempdir()) / f"ccci-ssh-{os.getuid()}-{h}"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def _remote_word(word: str) -> str:
    """One word of the remote command line, quoted for a POSIX shell; ``~/x`` stays the
    remote home (``"$HOME"/x``)."""
    if word == "~":
        return '"$HOME"'
    if word.startswith("~/"):
        return '"$HOME"/' + shlex.quote(word[2:])
    return shlex.quote(word)


def remote_command(words: Sequence[str]) -> str:
    """The command string ssh hands to the remote shell, every word quoted."""
    return " ".join(_remote_word(w) for w in words)


class Hosts:
    """The ssh layer of one fleet (``cfg`` is loaded with this host's identity)."""

    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg

    def spec(self, host: str) -> HostSpec:
        """:raises KeyError: for a name that is not in ``[[hosts]]`` (e.g. ``local`` seen
        from a named host)."""
        return self.cfg.hosts[host]

    def ssh_argv(self, host: str, words: Sequence[str], *, tty: bool = False) -> list[str]:
        """``ssh`` argv running ``words`` (quoted) on ``host``."""
        h = self.spec(host)
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(h.connect_timeout))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2",
                "-o", "ControlMaster=auto", "-o", f"ControlPersist={CONTROL_PERSIST_S}",
                "-o", f"ControlPath={control_dir(self.cfg) / '%C'}", "-o", "LogLevel=ERROR"]
        if h.port:
            argv += ["-p", str(h.port)]
        if h.identity_file:
            argv += ["-i", h.identity_file, "-o", "IdentitiesOnly=yes"]
        for opt in h.ssh_options:
            argv += ["-o", opt]
        argv += ["-t"] if tty else ["-T"]
        return [*argv, "--", h.ssh, remote_command(words)]

    def ccci_words(self, host: str, args: Iterable[str]) -> list[str]:
        """``[ccci, --fleet, DIR, --host, NAME, --local, *args]`` for ``host``: the remote
        ccci reads its own copy of the config as that host and contacts no other host."""
        h = self.spec(host)
        return [h.ccci, "--fleet", h.fleet_dir or str(self.cfg.root), "--host", host, "--local", *args]

    def run(self, host: str, words: Sequence[str], *, timeout: float | None = None,
            stdin: bytes | None = None) -> Reply:
        """Run ``words`` on ``host``, wait at most ``timeout`` seconds (default the host's
        ``timeout``). Never raises for a host that does not answer."""
        t0 = time.monotonic()
        try:
            argv = self.ssh_argv(host, words)
        except KeyError:
            return Reply(host, False, None, error=f"{host}: not a [[hosts]] entry, so it cannot be reached from "
                                                  f"{self.cfg.this_host}; run the command on that machine")
        limit = self.spec(host).timeout if timeout is None else timeout
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                p = subprocess.run(argv, stdout=out, stderr=err, timeout=limit,
                                   input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                return Reply(host, False, None, error=f"{host}: no answer within {limit:g}s (ssh {self.spec(host).ssh})",
                             seconds=time.monotonic() - t0)
            except OSError as exc:
                return Reply(host, False, None, error=f"{host}: cannot run ssh ({exc}); install openssh-client",
                             seconds=time.monotonic() - t0)
            o, e = _read(out), _read(err)
        dt = time.monotonic() - t0
        if p.returncode == SSH_FAILED:
            why = " ".join(e.split())[:200] or "ssh failed"
            return Reply(host, False, None, o, e, error=f"{host}: unreachable ({why})", seconds=dt)
        return Reply(host, True, p.returncode, o, e, seconds=dt)

    def ccci(self, host: str, args: Sequence[str], *, timeout: float | None = None) -> Reply:
        """Run ``ccci ARGS`` on ``host`` (see :meth:`ccci_words`)."""
        try:
            words = self.ccci_words(host, args)
        except KeyError:
            return self.run(host, [], timeout=timeout)  # the one-line "not a [[hosts]] entry" reply
        return self.run(host, words, timeout=timeout)

    def ccci_json(self, host: str, args: Sequence[str], *, timeout: float | None = None) -> tuple[Any, Reply]:
        """``(parsed JSON or None, reply)`` of ``ccci ARGS`` (which must print JSON). A
        reply that is not JSON becomes ``ok=False`` with the first line of its stderr."""
        r = self.ccci(host, args, timeout=timeout)
        if not r.ok:
            return None, r
        try:
            return r.json(), r
        except ValueError:
            first = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.code}").splitlines()[0][:200]
            r.ok, r.error = False, f"{host}: ccci did not answer with JSON ({first})"
            return None, r

    def ccci_json_many(self, hosts: Iterable[str], args: Sequence[str]) -> dict[str, tuple[Any, Reply]]:
        """:meth:`ccci_json` on every host at once (one thread per host, at most 16)."""
        hosts = list(hosts)
        if not hosts:
            return {}
        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            futs = {h: pool.submit(self.ccci_json, h, args) for h in hosts}
            return {h: f.result() for h, f in futs.items()}

    def passthrough(self, host: str, args: Sequence[str], *, timeout: float | None,
                    stdout: IO | None = None) -> Reply:
        """Run ``ccci ARGS`` on ``host`` with its output going straight to this process's
        stdout and stderr (``timeout=None``: no limit, e.g. ``logs -f``)."""
        t0 = time.monotonic()
        try:
            argv = self.ssh_argv(host, self.ccci_words(host, args))
        except KeyError:
            return self.run(host, [])
        with tempfile.TemporaryFile() as err:
            try:
                p = subprocess.run(argv, stdout=stdout, stderr=err, stdin=subprocess.DEVNULL, timeout=timeout)
            except subprocess.TimeoutExpired:
                return Reply(host, False, None, error=f"{host}: no answer within {timeout:g}s",
                             seconds=time.monotonic() - t0)
            except OSError as exc:
                return Reply(host, False, None, error=f"{host}: cannot run ssh ({exc}); install openssh-client")
            e = _read(err)
        if p.returncode == SSH_FAILED:
            return Reply(host, False, None, error=f"{host}: unreachable ({' '.join(e.split())[:200] or 'ssh failed'})",
                         seconds=time.monotonic() - t0)
        return Reply(host, True, p.returncode, stderr=e, seconds=time.monotonic() - t0)


def _read(fh) -> str:
    fh.seek(0)
    return fh.read().decode("utf-8", "replace")
