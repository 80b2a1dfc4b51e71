"""Watch the fleet's git origin on its own cadence (GitPython).

Every ``git.fetch_interval`` seconds (default 10) a cheap ``git ls-remote`` asks origin
for the branch head; only when it moved is the head fetched into a bare mirror in the
state directory (``<state_dir>/mirror.git``) and the new commits listed. Only what is
pushed to origin counts: the agents' clones are never read.

Publishes ``snapshot.facts["git"]`` (:class:`GitFacts`) every tick. An unreachable origin,
a missing branch or a corrupt origin is a ``degraded`` event (once per outage) and a
``recovered`` event when it works again; never an exception out of the tick. A broken
mirror (ccci's own cache) is rebuilt from origin (``mirror_rebuilt``).
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field

import git

from ccci.faultpoint import fault_point
from ccci.hookspecs import hookimpl
from ccci.model import Event
from ccci.stash import StashKey

BASELINE_KEY = "git.baseline.{branch}"
#: a commit id as ``git ls-remote`` / ``rev-parse`` print it: SHA-1 (40 hex) or SHA-256 (64 hex); see :func:`valid_head`
SHA_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


def valid_head(sha: str | None) -> bool:
    """``True`` for a real commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits,
    not the null id. git 2.39 ``ls-remote`` prints the null id (all zeros) for a branch
    whose ref file holds garbage (seen in tests/faults/test_git_trouble.py): that is a
    broken ref, never a head to baseline on."""
    return bool(sha) and bool(SHA_RE.match(sha)) and sha.strip("0") != ""


@dataclass
class Commit:
    """One commit pushed to origin: full ``sha``, ``subject`` line, ``author`` name and
    the ``files`` it changed (paths relative to the repository root)."""

    sha: str
    subject: str
    author: str
    files: list[str] = field(default_factory=list)


@dataclass
class GitFacts:
    """What the git watcher knows this tick.

    Attributes:
        branch: the watched branch.
        head: origin's branch head sha (``None`` before the first successful look).
        baseline: the persisted sha up to which handoffs were processed (``None``: never).
        commits: commits after ``baseline`` up to ``head``, oldest first.
        error: the last error text while degraded, else ``""``.
        checked_mono: monotonic time of the last ``ls-remote``.
        read: ``read(path) -> str | None``: a file's text at ``head`` (``None`` when the
            file does not exist or cannot be read; never raises).
    """

    branch: str
    head: str | None = None
    baseline: str | None = None
    commits: list[Commit] = field(default_factory=list)
    error: str = ""
    checked_mono: float = -1e9
    read: object = None


class GitWatcher:
    def __init__(self) -> None:
        self.facts: GitFacts | None = None
        self.remote_head: str | None = None
        self.listed_for: tuple[str | None, str | None] = (None, None)
        self._files: dict[tuple[str, str], str | None] = {}

    def observe(self, snapshot, config, state, mono) -> None:
        if not config.git.origin:
            return
        branch = config.git.branch
        if self.facts is None:
            self.facts = GitFacts(branch=branch)
        f = self.facts
        f.baseline = state.get(BASELINE_KEY.format(branch=branch))
        if mono - f.checked_mono >= float(config.git.fetch_interval):
            f.checked_mono = mono
            try:
                out = git.cmd.Git().ls_remote(config.git.origin, f"refs/heads/{branch}")
                head = out.split()[0] if out.strip() else None
                if head is None:
                    raise LookupError(f"origin has no branch {branch} (deleted, never pushed, or a broken ref)")
                if not valid_head(head):
                    raise LookupError(f"origin's branch {branch} is a broken ref (ls-remote gave {head[:40]!r})")
                if head != f.head:
                    rebuilt = self._fetch(config, head)
                    if rebuilt:
                        snapshot.events.append(Event("mirror_rebuilt", rebuilt))
                    # what was fetched, not what ls-remote said a moment earlier: origin may
                    # have moved (or been repaired) in between
                    with self._mirror(config) as mirror:
                        head = mirror.git.rev_parse(f"refs/ccci/origin/{branch}").strip()
                    if not valid_head(head):
                        raise LookupError(f"the fetched {branch} is not a commit ({head[:40]!r})")
                    fault_point("after_fetch")
                    f.head = head
                if f.error:
                    snapshot.events.append(Event("recovered", f"origin reachable again ({config.git.origin})"))
                f.error = ""
            except Exception as exc:  # noqa: BLE001 - degraded, never fatal
                msg = " ".join(str(exc).split())[:200]
                if not f.error:
                    snapshot.events.append(Event("degraded", f"git origin check failed: {msg}", data={"origin": config.git.origin}))
                f.error = msg
        if f.head and f.baseline and (f.head, f.baseline) != self.listed_for and not f.error:
            try:
                f.commits = self._list(config, f.baseline, f.head)
                self.listed_for = (f.head, f.baseline)
            except Exception as exc:  # noqa: BLE001 - e.g. baseline unknown after a force push
                f.commits = []
                snapshot.events.append(Event("degraded", f"cannot list commits {f.baseline[:10]}..{f.head[:10]}: "
                                             f"{' '.join(str(exc).split())[:160]}; re-baselining"))
                f.baseline = None  # the handoff check then sets a new baseline silently
        elif f.head == f.baseline:
            f.commits = []
        f.read = lambda path, _cfg=config, _head=f.head: self.read(_cfg, _head, path)
        snapshot.facts["git"] = f

    def read(self, config, head: str | None, path: str) -> str | None:
        """Text of ``path`` at ``head`` in the mirror, or ``None`` (missing file, no head,
        broken mirror). Results are cached per (head, path)."""
        if not head:
            return None
        key = (head, path)
        if key not in self._files:
            try:
                with self._mirror(config) as mirror:
                    self._files[key] = mirror.git.show(f"{head}:{path}")
            except Exception:  # noqa: BLE001 - a missing file is a normal answer
                self._files[key] = None
            if len(self._files) > 256:
                self._files.pop(next(iter(self._files)))
        return self._files[key]

    def _mirror(self, config) -> git.Repo:
        """The mirror as a ``git.Repo``, to use in a ``with`` block: closing it ends the
        ``git cat-file --batch`` processes GitPython keeps for reading objects (left to
        the garbage collector they outlived their use by seconds to minutes: 3 pipes
        and a process each, seen in tests/integration/test_watcher_leaks.py)."""
        path = config.state_dir / "mirror.git"
        if (path / "HEAD").exists():
            return git.Repo(path)
        return git.Repo.init(path, bare=True)

    def _fetch(self, config, head: str) -> str:
        """Fetch origin's branch into the mirror. The mirror is ccci's own cache: when
        the fetch fails right after origin answered ``ls-remote``, the mirror is
        rebuilt from origin once (a damaged HEAD, lost objects, a deleted directory).

        :returns: ``""``, or a one-line note when the mirror was rebuilt.
        :raises Exception: when the fetch fails on a fresh mirror too (origin's fault).
        """
        branch = config.git.branch
        refspec = f"+refs/heads/{branch}:refs/ccci/origin/{branch}"
        try:
            with self._mirror(config) as mirror:
                mirror.git.fetch("--quiet", config.git.origin, refspec)
            return ""
        except Exception as exc:  # noqa: BLE001 - decided below: mirror or origin
            why = " ".join(str(exc).split())[:160]
        path = config.state_dir / "mirror.git"
        shutil.rmtree(path, ignore_errors=True)
        self._files.clear()
        with self._mirror(config) as mirror:
            mirror.git.fetch("--quiet", config.git.origin, refspec)
        return f"the git mirror {path} could not be fetched into ({why}); rebuilt from origin"

    def _list(self, config, baseline: str, head: str) -> list[Commit]:
        out = []
        with self._mirror(config) as repo:
            for c in repo.iter_commits(f"{baseline}..{head}", reverse=True, max_count=500):
                subject = _subject(repo, c)
                files = repo.git.diff_tree("--no-commit-id", "--name-only", "-r", "--root", c.hexsha).splitlines()
                out.append(Commit(sha=c.hexsha, subject=subject, author=str(c.author.name), files=files))
        return out


def _subject(repo: git.Repo, commit) -> str:
    """The commit's subject line decoded from the raw object: with its ``encoding``
    header (default UTF-8), invalid bytes as U+FFFD. (GitPython falls back to Latin-1
    for the whole message when one byte is invalid, which turns every valid non-ASCII
    character into mojibake.)"""
    try:
        raw = repo.odb.stream(commit.binsha).read()
        headers, _, body = raw.partition(b"\n\n")
        enc = "utf-8"
        for line in headers.split(b"\n"):
            if line.startswith(b"encoding "):
                enc = line[9:].decode("ascii", "replace").strip() or "utf-8"
        first = body.split(b"\n", 1)[0]
        try:
            return first.decode(enc, "replace")
        except LookupError:  # an unknown encoding name
            return first.decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - fall back to GitPython's reading
        s = commit.summary
        return s if isinstance(s, str) else s.decode("utf-8", "replace")


WATCHER = StashKey[GitWatcher]("watcher")  #: one per runner, in the plugin's fleet stash


@hookimpl
def ccci_configure(stash):
    stash[WATCHER] = GitWatcher()


@hookimpl
def ccci_observe(snapshot, config, state, mono, stash, services):
    w = stash.setdefault(WATCHER, GitWatcher())
    w.observe(snapshot, config, state, mono)
    if config.git.origin and w.facts is not None:  # a quiet fleet's longer tick must not delay a fetch
        services.tick_within(max(0.0, w.facts.checked_mono + float(config.git.fetch_interval) - mono))
