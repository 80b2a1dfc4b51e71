"""``ccci init``: scaffold a fleet that ``ccci start`` and ``ccci watch`` run as it is.

Layout created in ``DIR``::

    ccci.toml            the config (builder + adversary loops)
    prompts/             editable copies of the role prompts
    origin.git/          a local bare git origin (only when no origin is given)
    work/builder/        the builder's clone of origin
    work/adversary/      the adversary's clone
    .ccci/               state (0700): state.db, logs/, mirror.git

Git work goes through GitPython.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import git

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
ROLES = ("builder", "adversary")


class InitError(RuntimeError):
    """The fleet cannot be scaffolded; the message says what and how to fix it."""


def _identity(repo: git.Repo, name: str) -> None:
    with repo.config_writer() as cw:
        cw.set_value("user", "name", f"ccci {name}")
        cw.set_value("user", "email", f"{name}@ccci.invalid")


def create_origin(path: Path, branch: str = "main") -> Path:
    """Create a bare repository with one initial commit on ``branch``.

    :returns: the origin path.
    """
    origin = git.Repo.init(path, bare=True)
    origin.git.symbolic_ref("HEAD", f"refs/heads/{branch}")
    seed = path.parent / ".seed"
    repo = git.Repo.init(seed)
    repo.git.checkout("-b", branch)
    _identity(repo, "init")
    (seed / "README.md").write_text("# Fleet project\n\nWork of the builder and adversary loops.\n")
    repo.index.add(["README.md"])
    repo.index.commit("init: empty project")
    repo.create_remote("origin", str(path))
    repo.git.push("origin", f"HEAD:{branch}")
    shutil.rmtree(seed)
    return path


def render_config(name: str, origin: str, branch: str, backend: str, demo: bool = False) -> str:
    """The ``ccci.toml`` text for a new fleet (``demo`` shortens every threshold)."""
    checks = ""
    agent_opts = ""
    if demo:
        checks = (
            "\n[checks]\n# demo thresholds: seconds instead of minutes, so faults heal while you watch\n"
            "stall_idle = 6\nstall_grace = 3\nstartup_grace = 2\nfailure_threshold = 2\n"
            "backoff_initial = 1\napi_error_backoff = 5\n"
        )
        agent_opts = "\n[agents.options]\nturn_seconds = 1.5\nwait_seconds = 600\n"
    agents = ""
    for role in ROLES:
        agents += (
            f'\n[[agents]]\nname = "{role}"\nrole = "loop"\nhandoff_role = "{role}"\n'
            f'workdir = "work/{role}"\nprompt_file = "prompts/{role}.md"\n{agent_opts}'
        )
    socket = f'tmux_socket = "ccci-{name}"\n' if demo else ""
    return (
        f"# ccci fleet config: see the README's configuration reference.\n"
        f'[fleet]\nname = {json.dumps(name)}\nstate_dir = ".ccci"\ntick_seconds = 1.0\n'
        f"{socket}"
        f'\n[git]\norigin = {json.dumps(origin)}\nbranch = {json.dumps(branch)}\nfetch_interval = {2 if demo else 10}\n'
        f'\n[defaults]\n# "scripted" is ccci\'s built-in stand-in agent; use "claude" for Claude Code.\n'
        f'backend = "{backend}"\n'
        f"{checks}{agents}"
    )


def init_fleet(directory: Path, origin: str | None = None, branch: str = "main", backend: str = "scripted",
               name: str | None = None, demo: bool = False) -> Path:
    """Scaffold a fleet in ``directory``.

    :param origin: git URL or path of an existing origin; ``None`` creates
        ``DIR/origin.git``.
    :returns: the path of the new ``ccci.toml``.
    :raises InitError: when ``DIR/ccci.toml`` exists or git fails.
    """
    directory = Path(directory).resolve()
    cfg = directory / "ccci.toml"
    if cfg.exists():
        raise InitError(f"{cfg}: exists already; pick another DIR or edit it")
    directory.mkdir(parents=True, exist_ok=True)
    name = name or "".join(c if c.isalnum() or c in "-_" else "-" for c in directory.name.lower()).strip("-_") or "fleet"
    try:
        if origin is None:
            origin = str(create_origin(directory / "origin.git", branch))
        for role in ROLES:
            dest = directory / "work" / role
            repo = git.Repo.clone_from(origin, dest)
            _identity(repo, role)
            if repo.head.is_valid() and repo.active_branch.name != branch:
                repo.git.checkout(branch)
    except git.GitCommandError as exc:
        raise InitError(f"git failed while creating the fleet: {' '.join(str(exc).split())[:300]}") from None
    (directory / "prompts").mkdir(exist_ok=True)
    for role in (*ROLES, "orchestrator"):
        src = PROMPTS / f"{role}.md"
        if src.is_file():
            shutil.copyfile(src, directory / "prompts" / f"{role}.md")
    cfg.write_text(render_config(name, origin, branch, backend, demo=demo))
    state = directory / ".ccci"
    state.mkdir(mode=0o700, exist_ok=True)
    return cfg
