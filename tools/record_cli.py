"""Record a CLI version's screens, draft their labels and check ccci's rules on them
(issue 12, "a drift routine anyone can run").

Usage (from the repository root, as root: the CLI runs in a loopback-only network
namespace)::

    python tools/record_cli.py claude 2.1.340
    python tools/record_cli.py codex 0.171.0 --out /tmp/codex-0.171.0
    python tools/record_cli.py claude 2.1.340 --no-record   # report on screens already recorded

Steps, each timed:

1. install the version with npm (:func:`ccci.testing.agent_clis.ensure_cli`, into
   ``.cache/npm-<cli>-<version>``; the pinned version stays in ``.cache/npm``);
2. run the CLI's recorder with that version selected by environment, against ccci's
   scripted model server inside a loopback-only network namespace:
   ``tests/e2e/test_claude_screens.py`` for ``claude`` (pytest;
   ``CCCI_CLAUDE_VERSION``/``CCCI_CLAUDE_BIN``, ``CCCI_RECORD_CLI=1``,
   ``CCCI_E2E_RECORD=1``, ``CCCI_E2E_RECORD_DIR``), ``tests/e2e/record_codexgemini.py``
   for ``codex`` and ``gemini`` (``CCCI_<CLI>_VERSION``/``CCCI_<CLI>_BIN``, output dir);
   the screens land in ``--out`` (default ``tests/golden/<cli>-<version>-recorded``) as
   ``NN_<state>.txt``;
3. draft ``LABELS.toml`` there from the nearest tested version's labels
   (:mod:`ccci.testing.screen_drift`; an existing ``LABELS.toml`` is kept, not drafted);
4. read every screen with the rules for that version (``ccci/patterns/<cli>-<version>.toml``
   if it exists, else the nearest older one) and print screen / expected state / got
   state / expected input_text / got, and ``N of M classified right``.

Exit status: 0 when every screen is labelled and read as labelled; 1 when a screen reads
differently from its label, needs a label, the recorder failed, or no screen shows the
version asked for; 2 for bad input (unknown CLI, malformed version, a version npm does
not have, npm missing), with a one-line message naming the fix.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ccci.backends.base import Backend  # noqa: E402
from ccci.testing import screen_drift  # noqa: E402
from ccci.testing.agent_clis import PINNED, CliUnavailable, ensure_cli, version_prefix  # noqa: E402

VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
#: the recorder's own time limit (seconds): the Claude one takes about 10 minutes
RECORD_TIMEOUT_S = 45 * 60


@dataclass(frozen=True)
class Recorder:
    """How to record one CLI.

    Attributes:
        argv: the command after ``python`` (``{out}`` is replaced by the output directory).
        version_env: the variable that selects the CLI version (``CCCI_CLAUDE_VERSION``).
        bin_env: the variable that names the installed binary (``CCCI_CLAUDE_BIN``).
        env: further environment.
        banner: text a screen of the version shows (``{version}`` replaced), to check the
            recorder ran the version asked for.
    """

    argv: tuple[str, ...]
    version_env: str
    bin_env: str
    env: tuple[tuple[str, str], ...] = ()
    banner: str = "{version}"


RECORDERS: dict[str, Recorder] = {
    "claude": Recorder(("-m", "pytest", "tests/e2e/test_claude_screens.py", "-v", "-s", "-p", "no:cacheprovider"),
                       "CCCI_CLAUDE_VERSION", "CCCI_CLAUDE_BIN",
                       (("CCCI_RECORD_CLI", "1"), ("CCCI_E2E_RECORD", "1"), ("CCCI_E2E_RECORD_DIR", "{out}")),
                       "Claude Code v{version}"),
    "codex": Recorder(("tests/e2e/record_codexgemini.py", "codex", "{out}"), "CCCI_CODEX_VERSION", "CCCI_CODEX_BIN",
                      banner="v{version}"),
    "gemini": Recorder(("tests/e2e/record_codexgemini.py", "gemini", "{out}"), "CCCI_GEMINI_VERSION",
                       "CCCI_GEMINI_BIN"),
}
#: CLIs ccci knows but this tool cannot record yet, and why
NO_RECORDER = {"opencode": "opencode's screens are recorded by tests/e2e/opencode/ (CCCI_E2E_RECORD=1) for a "
                           "few states only; record and label them by hand"}


class UsageError(Exception):
    """Bad input; ``str()`` is the one-line message (exit status 2)."""


def install(cli: str, version: str) -> Path:
    """The CLI at ``version``, installed with npm when missing.

    :raises UsageError: when npm lacks the version or cannot run (one line, naming the fix).
    """
    package = PINNED[cli].package
    try:
        return ensure_cli(cli, version=version)
    except CliUnavailable as exc:
        text = str(exc)
        prefix = version_prefix(cli, version)
        if prefix.is_dir() and not any(prefix.iterdir()):
            prefix.rmdir()  # the empty prefix ensure_cli made for a failed install
        if re.search(r"ETARGET|No matching version|E404|notarget", text):
            raise UsageError(f"npm has no {package}@{version}; list the published versions with "
                             f"`npm view {package} versions`") from None
        raise UsageError(f"cannot install {package}@{version}: {' '.join(text.split())[:300]} "
                         "(is npm installed and the registry reachable?)") from None


def record(cli: str, version: str, bin_path: Path, out: Path, log: Path) -> int:
    """Run the recorder of ``cli`` for ``version`` (binary ``bin_path``) into ``out``;
    its output goes to ``log`` and, line by line, to stdout.

    :returns: the recorder's exit status (-1 when it ran over :data:`RECORD_TIMEOUT_S`).
    """
    rec = RECORDERS[cli]
    argv = [sys.executable, *(a.replace("{out}", str(out)) for a in rec.argv)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), rec.version_env: version, rec.bin_env: str(bin_path),
           **{k: v.replace("{out}", str(out)) for k, v in rec.env}}
    print(f"$ {rec.version_env}={version} {' '.join(argv[1:])}   (log: {log})", flush=True)
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(RECORD_TIMEOUT_S, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                f.flush()
                if "CAPTURE " in line or line.startswith("==") or re.search(r"(^|\s)(FAILED|ERROR)\b", line):
                    print("  " + line.rstrip()[:200], flush=True)
            rc = proc.wait()
        finally:
            timed_out = not watchdog.is_alive() and proc.returncode is not None and proc.returncode < 0
            watchdog.cancel()
        return -1 if timed_out else rc


def shows_version(out: Path, cli: str, version: str) -> bool:
    """Some screen in ``out`` shows the version's banner (the recorder ran that version)."""
    banner = RECORDERS[cli].banner.format(version=version)
    return any(banner in (out / s).read_text(encoding="utf-8", errors="replace") for s in screen_drift.screen_files(out))


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status."""
    ap = argparse.ArgumentParser(prog="python tools/record_cli.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("cli", help=f"one of {', '.join(RECORDERS)}")
    ap.add_argument("version", help="the CLI version to record, e.g. 2.1.340")
    ap.add_argument("--out", type=Path, help="where the screens go (default tests/golden/<cli>-<version>-recorded)")
    ap.add_argument("--no-record", action="store_true",
                    help="do not install or record: draft labels (if missing) and report on the screens in --out")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    times: dict[str, float] = {}
    try:
        if args.cli in NO_RECORDER:
            raise UsageError(f"no recorder for {args.cli!r}: {NO_RECORDER[args.cli]}; "
                             f"this tool records {', '.join(RECORDERS)}")
        if args.cli not in RECORDERS:
            raise UsageError(f"unknown CLI {args.cli!r}; use one of {', '.join(RECORDERS)}")
        if not VERSION_RE.match(args.version):
            raise UsageError(f"version {args.version!r} is not a version number; give one like 2.1.340 "
                             f"(`npm view {PINNED[args.cli].package} versions` lists them)")
        out = (args.out or screen_drift.GOLDEN / f"{args.cli}-{args.version}-recorded").resolve()
        backend = screen_drift.backend_for(args.cli, args.version)
        ref = screen_drift.find_reference(args.cli, args.version, backend.versions_tested())
        recorder_rc = 0
        if not args.no_record:
            t = time.monotonic()
            bin_path = install(args.cli, args.version)
            times["install"] = time.monotonic() - t
            print(f"{PINNED[args.cli].package}@{args.version}: {bin_path} ({times['install']:.0f} s)", flush=True)
            out.mkdir(parents=True, exist_ok=True)
            log = Path(tempfile.gettempdir()) / f"record_cli-{args.cli}-{args.version}-{time.strftime('%Y%m%dT%H%M%S')}.log"
            t = time.monotonic()
            recorder_rc = record(args.cli, args.version, bin_path, out, log)
            times["record"] = time.monotonic() - t
            print(f"recorder exit status {recorder_rc} after {times['record']:.0f} s (log: {log})", flush=True)
        elif not out.is_dir():
            raise UsageError(f"{out} does not exist; record first (drop --no-record) or give --out")
    except (UsageError, screen_drift.DriftError) as exc:
        print(f"record_cli: {exc}", file=sys.stderr)
        return 2
    try:
        ok = report(args.cli, args.version, out, backend, ref, times)
    except screen_drift.DriftError as exc:
        print(f"record_cli: {exc}", file=sys.stderr)
        return 2
    if ok is None:
        return 1
    if not args.no_record and not shows_version(out, args.cli, args.version):
        print(f"WARNING: no screen shows {RECORDERS[args.cli].banner.format(version=args.version)!r}: the recorder "
              f"may have run another version (does it honour {RECORDERS[args.cli].version_env}?)")
        ok = False
    if recorder_rc != 0:
        print(f"the recorder failed (exit status {recorder_rc}): a capture misread (Claude) or a wait timed out; "
              "see its log")
        ok = False
    times["total"] = time.monotonic() - t_start
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + f" ({times['total'] / 60:.1f} min wall)")
    return 0 if ok else 1


def report(cli: str, version: str, out: Path, backend: Backend, ref: screen_drift.Reference,
           times: dict[str, float]) -> bool | None:
    """Draft ``out/LABELS.toml`` when missing, then print the rules-vs-labels report.

    :returns: whether every screen is labelled and read as labelled; ``None`` when
        ``out`` holds no screen.
    :raises screen_drift.DriftError: on an unreadable ``LABELS.toml``.
    """
    screens = screen_drift.screen_files(out)
    if not screens:
        print(f"record_cli: no screens (NN_<state>.txt) in {out}; the recorder failed, see its log above",
              file=sys.stderr)
        return None
    labels_path = out / "LABELS.toml"
    t = time.monotonic()
    if labels_path.exists():
        labels = screen_drift.read_labels(labels_path)
        print(f"\nlabels: {labels_path} exists, kept (not drafted)")
    else:
        draft = screen_drift.draft_labels(out, ref)
        readings = {r.screen: r.got_state for r in screen_drift.classify(out, {}, backend)}
        labels_path.write_text(screen_drift.render_labels(draft, cli, version, ref, readings),
                               encoding="utf-8")
        labels = screen_drift.read_labels(labels_path)
        print(f"\nlabels: DRAFTED {labels_path} from {ref.directory.name}/LABELS.toml ({cli} {ref.version}): "
              f"{len(draft.labels)} copied, {len(draft.unlabelled)} need a label"
              + (f": {', '.join(draft.unlabelled)}" if draft.unlabelled else ""))
        if draft.unused:
            print(f"not recorded this time (labelled in {ref.version} only): {', '.join(draft.unused)}")
    rows = screen_drift.classify(out, labels, backend)
    times["labels+report"] = time.monotonic() - t
    own = "its own file" if backend.rules_version == version else f"no {cli}-{version}.toml: the nearest older file"
    print(f"rules: {backend.patterns.origin} ({own}); screens: {out}\n")
    print(screen_drift.format_report(rows))
    return screen_drift.all_right(rows)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
