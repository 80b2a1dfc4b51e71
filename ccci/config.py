"""``ccci.toml``: the fleet's configuration, validated on load.

Every error is one line naming the file, the key and the fix, e.g.::

    ccci.toml: agents[1].role: 'lop' is not a role; use one of loop, orchestrator, job

See the README's configuration reference for every key. ``CCCI_BACKEND`` and
``CCCI_MODEL`` in the environment override ``[defaults] backend`` / ``model`` (agents
that name their own backend or model keep it).
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccci.model import AgentSpec, Role

CONFIG_NAME = "ccci.toml"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

#: Check thresholds and runner limits; seconds for durations. Where the number comes
#: from is noted: the fleet ccci replaces, Kubernetes, OTP, systemd
#: (docs/agent-clis.md#where-the-supervisor-defaults-come-from).
DEFAULT_CHECKS: dict[str, float | int] = {
    "stall_idle": 300,  # s without a screen change and no declared wait (the fleet ccci replaces)
    "stall_grace": 180,  # s past a WAITING-UNTIL before acting (a self-wake was 37 s late)
    "startup_grace": 15,  # s after a (re)start during which only process death counts
    "failure_threshold": 2,  # consecutive failing ticks before acting (k8s uses 3)
    "max_resumes": 20,  # resumes of one conversation after failures (deaths, stalls, errors) before escalating
    # clean turn ends of a backend that exits at every turn end (opencode run) are resumed
    # without limit but this one: one turn per 15 s sustained for an hour is a loop that
    # ends turns without doing anything (an empty real opencode turn took 3.1 s; ccci.guards)
    "max_turns_per_hour": 240,
    # a given-up agent is retried automatically (docs/reliability.md#escalation-and-automatic-retries):
    "escalation_retries": 3,  # automatic retries per escalation before it stays given up
    "escalation_retry_initial": 1800,  # s after an escalation before the 1st retry; doubles per retry
    "escalation_retry_max": 14400,  # s cap of that delay (4 h); also how long a retry must hold to count as recovered
    "restart_intensity": 5,  # restarts allowed per restart_period (OTP intensity/period)
    "restart_period": 600,  # s
    "backoff_initial": 2,  # s before the 2nd restart; doubles each time
    "backoff_max": 300,  # s cap (Kubernetes CrashLoopBackOff caps at 300 s)
    "backoff_reset": 600,  # s healthy after which the backoff resets (Kubernetes: 10 min)
    "breaker_min_agents": 3,  # the fleet breaker needs at least this many failing agents
    "breaker_fraction": 0.5,  # ... and at least this fraction of the fleet
    "breaker_window": 60,  # s window in which those failures count
    "breaker_cooldown": 300,  # s the breaker stays open
    "nudges_before_restart": 1,  # stall: nudges before a restart
    "send_retries": 3,  # Enter re-sends when verifying delivery
    "send_enter_delay": 0.2,  # s between the text and Enter (0.05-0.2 s: docs/agent-clis.md#enter-after-paste)
    "check_budget": 2.0,  # s a single check may take before it is reported as slow
    "check_timeout": 10.0,  # s after which a check is interrupted (UNKNOWN; 5 in a row disable it)
    "remedy_timeout": 60.0,  # s after which a remedy (or ccci_configure) implementation is interrupted
    # API errors (ccci/checks/api_error.py): the n-th 'continue' of an outage waits
    # api_error_backoff * 2**(n-1) s, at most api_error_backoff_max; an announced reset
    # (retry-after, rate-limit reset) is waited for instead
    "api_error_backoff": 60,  # s before the 1st 'continue' (the CLI itself already retried ~200 s: docs/agent-clis.md)
    "api_error_backoff_max": 900,  # s cap: 60 s doubled 4 times (60, 120, 240, 480, 900)
    "api_error_max_attempts": 6,  # continues answered by the error again before escalating
    "api_error_escalate_after": 1800,  # s of outage (from its first decision) before escalating; a reset restarts it
    # a dialog nobody answers (ccci/checks/needs_input.py): as long as a silent agent is
    # given (stall_idle), since the stall check leaves waiting_input to this check
    "needs_input_wait": 300,  # s a permission/question dialog may wait before escalating
    # token usage and context use (ccci/usage_watch.py, ccci/checks/compact_before_limit.py)
    "usage_interval": 10,  # s between two reads of an agent's usage records (read incrementally)
    # fraction of the context window above which an idle agent is sent /compact before its
    # next message (the fleet ccci replaces had its loops compact at ~80 %); 0 = never
    "compact_at": 0.8,
}


#: the host name of an agent without ``host =``, and of a machine that is not told which host it is
LOCAL_HOST = "local"
#: keys of a ``[[hosts]]`` table
KNOWN_HOST = {"name", "ssh", "port", "identity_file", "ssh_options", "ccci", "fleet_dir", "python", "connect_timeout",
              "timeout"}


@dataclass(frozen=True)
class HostSpec:
    """One ``[[hosts]]`` table: a machine that runs its own ``ccci watch`` over its own
    agents, reached from the others with OpenSSH (:mod:`ccci.hosts`).

    Attributes:
        name: host name used by ``host =`` on agents (``[a-z0-9_-]+``, not ``local``).
        ssh: the ssh destination, ``user@address`` or an alias of ``~/.ssh/config``.
        port: ssh port (``None``: ssh's default or ``~/.ssh/config``).
        identity_file: absolute path of a private key for ``ssh -i`` (``None``: ssh's default).
        ssh_options: extra ``-o`` options, each ``"Key=Value"`` (e.g. ``"StrictHostKeyChecking=accept-new"``).
        ccci: the ``ccci`` command on the host (default ``~/.local/share/ccci/venv/bin/ccci``,
            where ``ccci hosts deploy`` installs it; a leading ``~/`` is the remote home).
        fleet_dir: the fleet directory on the host (default: the same path as here).
        python: the Python 3.11+ interpreter ``ccci hosts deploy`` makes the venv with (default ``python3``).
        connect_timeout: seconds ssh may take to connect (``ConnectTimeout``, default 5).
        timeout: seconds one whole remote call may take before the host counts as
            unreachable (default 20; ``ccci logs -f`` and ``events -f`` have none).
    """

    name: str
    ssh: str
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    ccci: str = "~/.local/share/ccci/venv/bin/ccci"
    fleet_dir: str = ""
    python: str = "python3"
    connect_timeout: float = 5.0
    timeout: float = 20.0


class ConfigError(ValueError):
    """A config problem; ``str()`` is the one-line message (file: key: problem; fix)."""


@dataclass(frozen=True)
class GitSettings:
    """``[git]``: the fleet's origin.

    Attributes:
        origin: URL or path of the origin repository ("" = no git handoffs).
        branch: branch the agents push to.
        fetch_interval: seconds between ``ls-remote`` checks (default 10).
    """

    origin: str = ""
    branch: str = "main"
    fetch_interval: float = 10.0


@dataclass(frozen=True)
class HandoffRule:
    """One ``[[handoff]]`` rule: a new commit on origin whose subject starts with
    ``prefix`` pings the agent(s) whose ``handoff_role`` or name is ``to``.

    ``message`` is a template with ``{sha}``, ``{short}``, ``{subject}``, ``{author}``,
    ``{branch}``.
    """

    prefix: str
    to: str
    message: str


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: the Prometheus endpoint of ``ccci watch`` (off unless ``listen`` is set).

    Attributes:
        host: the IP address to bind (``127.0.0.1`` when ``listen`` says ``localhost``).
        port: the TCP port, 1-65535.
        allow_remote: ``True`` when the file asks, with ``allow_remote = true``, for a
            non-loopback ``host`` (metrics are read-only: no token is asked for).
    """

    host: str
    port: int
    allow_remote: bool = False

    @property
    def listen(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DEFAULT_HANDOFFS = (
    HandoffRule(
        "claim(",
        "adversary",
        "ccci: new claim pushed to origin/{branch}: {short} {subject}. Verify it adversarially "
        "and push review(...) with your verdict.",
    ),
    HandoffRule(
        "review(",
        "builder",
        "ccci: new review pushed to origin/{branch}: {short} {subject}. Read it and proceed.",
    ),
)


@dataclass
class FleetConfig:
    """A loaded ``ccci.toml``.

    Attributes:
        path: the config file.
        root: the fleet directory (the file's parent).
        name: fleet name (``[fleet] name``).
        state_dir: absolute state directory (default ``<root>/.ccci``), mode 0700.
        tmux_socket: ``tmux -L`` socket name, ``""`` for the default server (by its path,
            :func:`ccci.tmux.socket_path_of`, not through ``$TMUX``).
        tick_seconds: runner tick (default 1.0 s).
        idle_tick_seconds: the safety tick of a quiet fleet while the watcher's tmux
            control client runs (default 5.0 s; ``0`` = always ``tick_seconds``): after
            a tick that saw nothing change and found nothing, the next one comes after
            this long unless an event (a pane printed, a pane process exited, a session
            came or went, a CLI's hook spool, a plugin's ``wake``) wakes the runner
            first (``Supervisor.next_delay``).
        idle_exit: seconds a watcher that ``ccci start`` (or ``ccci job``) started in the
            background waits with nothing to supervise (every agent stopped, no job
            running, requested or scheduled) before it exits; ``0`` = never (default
            300 s). A watcher run by hand or as a service never exits for this.
        git: :class:`GitSettings`.
        checks: thresholds (:data:`DEFAULT_CHECKS` merged with ``[checks]``).
        agents: the agents, in file order.
        handoffs: handoff rules (``[[handoff]]`` or the builtin claim/review pair).
        patterns: user pattern overrides by backend name (``[patterns.NAME] rules``).
        pattern_versions: CLI version whose pattern file a backend reads screens with,
            by backend name (``[patterns.NAME] version = "2.1.197"``; an explicit
            override of the version the backend detects).
        raw: the parsed TOML, for plugins that read their own tables.
        metrics: :class:`MetricsSettings` of ``[metrics]``, ``None`` when metrics are off.
        web: :class:`WebSettings` of ``[web]`` (``ccci web``).
        hosts: ``[[hosts]]`` by name (:class:`HostSpec`); empty for a one-machine fleet.
        this_host: which host this process is (``CCCI_HOST``, which ``ccci --host NAME``
            sets, else ``[fleet] this_host``, else ``local``).
        all_agents: every agent of every host; ``agents`` holds only this host's, so a
            watcher supervises (and pings) only its own agents and never another host's tmux.
        context_windows: ``[context_windows]``: model name pattern (``*`` wildcard) -> context
            window in tokens, tried before the shipped ``ccci/data/context_windows.toml``
            (:func:`ccci.usage.context_window`).
    """

    path: Path
    root: Path
    name: str
    state_dir: Path
    tmux_socket: str = ""
    tick_seconds: float = 1.0
    idle_exit: float = 300.0
    idle_tick_seconds: float = 5.0
    git: GitSettings = field(default_factory=GitSettings)
    checks: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CHECKS))
    agents: list[AgentSpec] = field(default_factory=list)
    agent_checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    handoffs: tuple[HandoffRule, ...] = DEFAULT_HANDOFFS
    patterns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pattern_versions: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    metrics: MetricsSettings | None = None
    context_windows: dict[str, int] = field(default_factory=dict)
    web: "WebSettings | None" = None
    hosts: dict[str, HostSpec] = field(default_factory=dict)
    this_host: str = LOCAL_HOST
    all_agents: list[AgentSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.all_agents:  # a config built by hand (tests, plugins): one host, its agents are all
            self.all_agents = list(self.agents)

    def remote_agents(self) -> dict[str, list[AgentSpec]]:
        """Agents of other hosts, by host name in ``[[hosts]]`` order (hosts without
        agents included: their watcher may still run)."""
        out: dict[str, list[AgentSpec]] = {h: [] for h in self.hosts if h != self.this_host}
        for a in self.all_agents:
            if a.host != self.this_host:
                out.setdefault(a.host, []).append(a)
        return out

    def host_of(self, agent: str) -> str | None:
        """The host of ``agent`` (any host), ``None`` for an unknown name."""
        return next((a.host for a in self.all_agents if a.name == agent), None)

    def agent(self, name: str) -> AgentSpec:
        """The agent called ``name``.

        :raises ConfigError: naming the file and the known agents.
        """
        for a in self.agents:
            if a.name == name:
                return a
        known = ", ".join(a.name for a in self.agents) or "none"
        raise ConfigError(f"{self.path}: no agent {name!r}; agents are: {known}")

    def settings_for(self, agent: str | None) -> dict[str, Any]:
        """Thresholds for ``agent``: fleet ``[checks]`` with the agent's overrides."""
        merged = dict(self.checks)
        if agent:
            merged.update(self.agent_checks.get(agent, {}))
        return merged

    def session_name(self, agent: str) -> str:
        """The tmux session of ``agent``: ``ccci-<fleet>-<agent>``."""
        return f"ccci-{self.name}-{agent}"

    def tmux_args(self) -> list[str]:
        """``["-L", socket]``, or ``["-S", path]`` of tmux's default server when
        ``tmux_socket`` is ``""`` (:func:`ccci.tmux.socket_path_of`: the same server
        from inside another tmux server as from outside)."""
        if self.tmux_socket:
            return ["-L", self.tmux_socket]
        from ccci.tmux import socket_path_of

        return ["-S", socket_path_of()]


def find_config(start: Path | None = None) -> Path:
    """Find ``ccci.toml`` in ``start`` (default ``$CCCI_FLEET`` or the cwd) or a parent.

    :raises ConfigError: when none is found.
    """
    here = Path(start or os.environ.get("CCCI_FLEET") or Path.cwd()).resolve()
    if here.is_file():
        return here
    for d in (here, *here.parents):
        if (d / CONFIG_NAME).is_file():
            return d / CONFIG_NAME
    raise ConfigError(f"{here}: no {CONFIG_NAME} here or above; run 'ccci init DIR' or pass --fleet DIR")


def load(path: Path | str, environ: dict[str, str] | None = None) -> FleetConfig:
    """Load and validate a fleet config.

    :param path: the ``ccci.toml`` file or its directory.
    :param environ: environment for ``CCCI_BACKEND``/``CCCI_MODEL`` (default os.environ).
    :raises ConfigError: one line: file, key, problem and fix.
    """
    env = os.environ if environ is None else environ
    p = Path(path)
    if p.is_dir():
        p = p / CONFIG_NAME
    p = p.resolve()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found; run 'ccci init {p.parent}' to create one") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text; save it as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_error(p, text, exc)) from None
    cfg = _build(raw, p, env)
    from ccci import phases  # validates [phases]; late import: phases imports this module

    phases.settings(cfg)
    return cfg


_AT_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def _syntax_error(path: Path, text: str, exc: Exception) -> str:
    """One line for a TOML syntax error: file, the key (``table.key``) on the failing
    line when there is one, the line number, tomllib's reason and the fix."""
    reason = " ".join(str(exc).split())
    m = _AT_LINE.search(reason)
    if not m:
        return f"{path}: invalid TOML ({reason}); fix the syntax there"
    lineno = int(m.group(1))
    reason = _AT_LINE.sub("", reason).strip()
    lines = text.splitlines()
    table = ""
    for ln in lines[: lineno - 1]:
        h = _HEADER.match(ln)
        if h:
            table = h.group(1).strip()
    line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
    k = _KEY.match(line)
    if k:
        key = f"{table}.{k.group(1).strip()}" if table else k.group(1).strip()
    elif line.lstrip().startswith("["):
        key = line.strip().strip("[] ") or "(table header)"
    else:
        key = table or "(top level)"
    return f"{path}: {key}: invalid TOML at line {lineno} ({reason}): {line.strip()[:80]!r}; fix the syntax there"


def _err(path: Path, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {msg}")


def _table(raw: dict, key: str, path: Path) -> dict:
    val = raw.get(key, {})
    if not isinstance(val, dict):
        raise _err(path, key, f"expected a table [{key}], got {type(val).__name__}")
    return val


def _num(val: Any, path: Path, key: str, minimum: float = 0.0) -> float:
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise _err(path, key, f"expected a number, got {val!r}")
    if val < minimum:
        raise _err(path, key, f"must be >= {minimum}, got {val}")
    return val


#: thresholds that are counts: a whole number of at least this much, and how to fix a bad one
INT_THRESHOLDS: dict[str, tuple[int, str]] = {
    "max_resumes": (0, "a whole number of resumes, e.g. 20"),
    "max_turns_per_hour": (1, "a whole number of turn ends per hour, e.g. 240 (the default)"),
    "escalation_retries": (0, "a whole number of automatic retries, e.g. 3; 0 = never retry"),
    "api_error_max_attempts": (1, "a whole number >= 1 of continue attempts, e.g. 6 (the default)"),
}
#: thresholds that are fractions: at most 1.0, and how to fix a bad one
FRACTION_THRESHOLDS: dict[str, str] = {
    "compact_at": "a fraction of the context window between 0 and 1, e.g. 0.8 (the default); 0 = never compact",
}


def _threshold(name: str, val: Any, path: Path, key: str) -> float:
    """A ``[checks]`` value: a number >= 0; the counts of :data:`INT_THRESHOLDS` must be
    whole numbers at least their minimum. :raises ConfigError: one line naming ``key``."""
    num = _num(val, path, key)
    if name in INT_THRESHOLDS:
        minimum, fix = INT_THRESHOLDS[name]
        if num != int(num) or num < minimum:
            raise _err(path, key, f"{val!r} is not allowed; use {fix}")
    if name in FRACTION_THRESHOLDS and num > 1:
        raise _err(path, key, f"{val!r} is not allowed; use {FRACTION_THRESHOLDS[name]}")
    return num


def _check_pairs(merged: dict[str, Any], path: Path, table: str) -> None:
    """Thresholds that only make sense together (``merged``: defaults and overrides)."""
    if float(merged["api_error_backoff_max"]) < float(merged["api_error_backoff"]):
        raise _err(path, f"{table}.api_error_backoff_max",
                   f"{merged['api_error_backoff_max']} is below api_error_backoff ({merged['api_error_backoff']}); "
                   "the cap must be at least the first wait: raise api_error_backoff_max or lower api_error_backoff")


def _str(val: Any, path: Path, key: str) -> str:
    if not isinstance(val, str):
        raise _err(path, key, f"expected a string, got {val!r}")
    return val


KNOWN_TOP = {"fleet", "git", "checks", "agents", "handoff", "patterns", "defaults", "notify", "phases", "plugins",
             "opencode", "metrics", "web", "hosts", "context_windows", "prices", "budget"}
_LISTEN_EXAMPLE = 'e.g. listen = "127.0.0.1:9464"'


def _listen_table(raw: dict, path: Path, name: str, example: str, exposes: str,
                  remote_note: str = "") -> tuple[str | None, int | None, bool]:
    """A ``[NAME]`` table of ``listen = "HOST:PORT"`` (:func:`parse_listen`) and
    ``allow_remote`` (bool), as ``[metrics]`` and ``[web]`` have: ``(host, port,
    allow_remote)``, host and port ``None`` when ``listen`` is absent. A non-loopback
    host needs ``allow_remote = true``; the error says that other machines could
    ``exposes`` (e.g. "read the metrics"), then ``remote_note``.

    :raises ConfigError: one line naming the key and the fix (``example``).
    """
    table = _table(raw, name, path)
    for k in table:
        if k not in ("listen", "allow_remote"):
            raise _err(path, f"{name}.{k}", "unknown key; known: allow_remote, listen")
    allow = table.get("allow_remote", False)
    if not isinstance(allow, bool):
        raise _err(path, f"{name}.allow_remote", f"expected true or false, got {allow!r}")
    if "listen" not in table:
        return None, None, allow
    host, port = parse_listen(_str(table["listen"], path, f"{name}.listen"), path, f"{name}.listen", example)
    if not ipaddress.ip_address(host).is_loopback and not allow:
        raise _err(path, f"{name}.listen", f"{host} is not a loopback address, so other machines could {exposes}; "
                   f"bind 127.0.0.1, or add allow_remote = true to [{name}] if you mean it{remote_note}")
    return host, port, allow


def _metrics(raw: dict, path: Path) -> MetricsSettings | None:
    """``[metrics]``: ``listen = "HOST:PORT"`` (an IP address, ``[v6]`` in brackets, or
    ``localhost``) and ``allow_remote`` (bool). A non-loopback host needs
    ``allow_remote = true``. :raises ConfigError: one line naming the key and the fix."""
    host, port, allow = _listen_table(raw, path, "metrics", _LISTEN_EXAMPLE, "read the metrics")
    if host is None or port is None:
        return None
    return MetricsSettings(host=host, port=port, allow_remote=allow)


def parse_listen(listen: str, path: Path | str, key: str, example: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IP address, ``[v6]`` in brackets, or ``localhost``, which reads
    as ``127.0.0.1``) as ``(ip, port)``.

    :raises ConfigError: one line naming ``path``, ``key`` and the fix (``example``).
    """
    listen = listen.strip()
    m = re.fullmatch(r"\[(?P<v6>[^\]]+)\]:(?P<port>\d{1,5})|(?P<host>[^:\[\]]+):(?P<port4>\d{1,5})", listen)
    if not m:
        raise _err(path, key, f"{listen!r} is not HOST:PORT; {example}")
    host = m["v6"] or m["host"]
    port = int(m["port"] or m["port4"])
    if not 1 <= port <= 65535:
        raise _err(path, key, f"port {port} is not 1-65535; {example}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise _err(path, key, f"{host!r} is not an IP address; use one (no host names), {example}") from None
    return str(addr), port


@dataclass
class WebSettings:
    """``[web]``: where ``ccci web`` listens (``listen = "HOST:PORT"``; default
    ``127.0.0.1:8765``). A non-loopback ``host`` needs ``allow_remote = true``, and then
    every request, reads included, must carry the dashboard's token (:mod:`ccci.web`)."""

    host: str = "127.0.0.1"
    port: int = 8765
    allow_remote: bool = False


def _web(raw: dict, path: Path) -> WebSettings:
    """``[web]``: ``listen`` and ``allow_remote`` (:func:`_listen_table`). :raises ConfigError: one line."""
    host, port, allow = _listen_table(raw, path, "web", 'e.g. listen = "127.0.0.1:8765"', "reach the dashboard",
                                      " (every request then needs the token)")
    if host is None or port is None:
        return WebSettings(allow_remote=allow)
    return WebSettings(host=host, port=port, allow_remote=allow)


KNOWN_AGENT = {"name", "role", "backend", "model", "workdir", "prompt_file", "handoff_role", "env", "options", "checks",
               "schedule", "host"}


def _hosts(raw: dict, path: Path) -> dict[str, HostSpec]:
    """``[[hosts]]``: name, ssh and the ssh options of :class:`HostSpec`.
    :raises ConfigError: one line naming the key and the fix."""
    hs = raw.get("hosts", [])
    if not isinstance(hs, list):
        raise _err(path, "hosts", 'expected an array of tables [[hosts]] with name = "box1", ssh = "user@box1"')
    out: dict[str, HostSpec] = {}
    for i, h in enumerate(hs):
        where = f"hosts[{i}]"
        if not isinstance(h, dict):
            raise _err(path, where, 'expected a table with name = "box1", ssh = "user@box1"')
        for k in h:
            if k not in KNOWN_HOST:
                raise _err(path, f"{where}.{k}", f"unknown key; known: {', '.join(sorted(KNOWN_HOST))}")
        for req in ("name", "ssh"):
            if req not in h:
                raise _err(path, f"{where}.{req}", 'missing; a host needs name = "box1" and ssh = "user@box1"')
        hname = _str(h["name"], path, f"{where}.name")
        if not NAME_RE.match(hname) or hname == LOCAL_HOST:
            raise _err(path, f"{where}.name", f"{hname!r} must match [a-z0-9][a-z0-9_-]* (max 40) and not be "
                       f"{LOCAL_HOST!r} (this machine's name when no host is set); rename it")
        if hname in out:
            raise _err(path, f"{where}.name", f"duplicate host {hname!r}; names must be unique")
        dest = _str(h["ssh"], path, f"{where}.ssh").strip()
        if not dest or dest.startswith("-") or any(c.isspace() for c in dest):
            raise _err(path, f"{where}.ssh", f"{dest!r} is not an ssh destination; use user@address or a "
                       "Host alias of ~/.ssh/config (no blanks, not starting with '-')")
        port = h.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise _err(path, f"{where}.port", f"{port!r} is not a TCP port; use a whole number 1-65535, e.g. 22")
        ident = h.get("identity_file")
        if ident is not None:
            ident = os.path.expanduser(_str(ident, path, f"{where}.identity_file"))
            if not Path(ident).is_absolute():
                ident = str((path.parent / ident).resolve())
        opts = h.get("ssh_options", [])
        if not isinstance(opts, list) or not all(isinstance(o, str) and re.fullmatch(r"[A-Za-z]+=\S.*", o) for o in opts):
            raise _err(path, f"{where}.ssh_options", f"{opts!r} is not a list of \"Key=Value\" ssh options; "
                       'e.g. ssh_options = ["StrictHostKeyChecking=accept-new"]')
        fields: dict[str, Any] = {}
        for k in ("ccci", "fleet_dir", "python"):
            if k in h:
                v = _str(h[k], path, f"{where}.{k}").strip()
                if not v or v.startswith("-"):
                    raise _err(path, f"{where}.{k}", f"{v!r} is empty or starts with '-'; give a path")
                fields[k] = v
        for k, default in (("connect_timeout", 5.0), ("timeout", 20.0)):
            fields[k] = _num(h.get(k, default), path, f"{where}.{k}", 0.5)
        out[hname] = HostSpec(name=hname, ssh=dest, port=port, identity_file=ident,
                              ssh_options=tuple(opts), **fields)
    return out


def _this_host(fleet: dict, env: Any, hosts: dict[str, HostSpec], path: Path) -> str:
    """Which host this process is: ``CCCI_HOST`` (``ccci --host NAME`` sets it), else
    ``[fleet] this_host``, else ``local``. :raises ConfigError: for a name that is
    neither ``local`` nor a ``[[hosts]]`` entry."""
    if env.get("CCCI_HOST"):
        name, key = env["CCCI_HOST"], "CCCI_HOST (or ccci --host)"
    else:
        name, key = _str(fleet.get("this_host", LOCAL_HOST), path, "fleet.this_host"), "fleet.this_host"
    if name != LOCAL_HOST and name not in hosts:
        known = ", ".join([LOCAL_HOST, *hosts])
        raise _err(path, key, f"{name!r} is not a host of this fleet; use one of {known} ([[hosts]] names)")
    return name


def _build(raw: dict, path: Path, env: Any) -> FleetConfig:
    root = path.parent
    for key in raw:
        if key not in KNOWN_TOP:
            raise _err(path, key, f"unknown top-level key; known: {', '.join(sorted(KNOWN_TOP))}")
    fleet = _table(raw, "fleet", path)
    hosts = _hosts(raw, path)
    this_host = _this_host(fleet, env, hosts, path)
    if "notify" in raw:  # Apprise URLs, quiet hours, digest: one-line errors (ccci.reporters.notify)
        from ccci.reporters.notify import validate as _validate_notify

        _validate_notify(raw["notify"], path)
    name = fleet.get("name", root.name.lower())
    name = _str(name, path, "fleet.name")
    if not NAME_RE.match(name):
        raise _err(path, "fleet.name", f"{name!r} must match [a-z0-9][a-z0-9_-]* (max 40); rename it")
    state_dir = Path(_str(fleet.get("state_dir", ".ccci"), path, "fleet.state_dir"))
    if not state_dir.is_absolute():
        state_dir = root / state_dir
    tick = _num(fleet.get("tick_seconds", 1.0), path, "fleet.tick_seconds", 0.05)
    sock = _str(fleet.get("tmux_socket", ""), path, "fleet.tmux_socket")
    idle_exit = _num(fleet.get("idle_exit", 300.0), path, "fleet.idle_exit", 0.0)
    idle_tick = _num(fleet.get("idle_tick_seconds", 5.0), path, "fleet.idle_tick_seconds", 0.0)

    g = _table(raw, "git", path)
    origin = _str(g.get("origin", ""), path, "git.origin")
    if origin and "://" not in origin and ":" not in origin.split("/")[0] and not Path(origin).is_absolute():
        origin = str((root / origin).resolve())
    git = GitSettings(
        origin=origin,
        branch=_str(g.get("branch", "main"), path, "git.branch"),
        fetch_interval=_num(g.get("fetch_interval", 10.0), path, "git.fetch_interval", 0.2),
    )

    checks = dict(DEFAULT_CHECKS)
    for k, v in _table(raw, "checks", path).items():
        if k not in DEFAULT_CHECKS:
            raise _err(path, f"checks.{k}", f"unknown threshold; known: {', '.join(sorted(DEFAULT_CHECKS))}")
        checks[k] = _threshold(k, v, path, f"checks.{k}")
    _check_pairs(checks, path, "checks")

    defaults = _table(raw, "defaults", path)
    default_backend = env.get("CCCI_BACKEND") or _str(defaults.get("backend", "claude"), path, "defaults.backend")
    default_model = env.get("CCCI_MODEL") or _str(defaults.get("model", ""), path, "defaults.model")

    agents_raw = raw.get("agents", [])
    if not isinstance(agents_raw, list):
        raise _err(path, "agents", "expected an array of tables [[agents]]")
    agents: list[AgentSpec] = []
    agent_checks: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for i, a in enumerate(agents_raw):
        where = f"agents[{i}]"
        if not isinstance(a, dict):
            raise _err(path, where, "expected a table")
        for k in a:
            if k not in KNOWN_AGENT:
                raise _err(path, f"{where}.{k}", f"unknown key; known: {', '.join(sorted(KNOWN_AGENT))}")
        if "name" not in a:
            raise _err(path, f"{where}.name", "missing; every agent needs a name")
        aname = _str(a["name"], path, f"{where}.name")
        if not NAME_RE.match(aname):
            raise _err(path, f"{where}.name", f"{aname!r} must match [a-z0-9][a-z0-9_-]* (max 40); rename it")
        if aname in seen:
            raise _err(path, f"{where}.name", f"duplicate agent {aname!r}; names must be unique")
        seen.add(aname)
        role_s = a.get("role", "loop")
        try:
            role = Role(role_s)
        except ValueError:
            raise _err(path, f"{where}.role", f"{role_s!r} is not a role; use one of loop, orchestrator, job") from None
        workdir = Path(_str(a.get("workdir", f"work/{aname}"), path, f"{where}.workdir"))
        if not workdir.is_absolute():
            workdir = root / workdir
        prompt_file = None
        if "prompt_file" in a:
            prompt_file = Path(_str(a["prompt_file"], path, f"{where}.prompt_file"))
            if not prompt_file.is_absolute():
                prompt_file = root / prompt_file
        envmap = a.get("env", {})
        if not isinstance(envmap, dict) or not all(isinstance(v, str) for v in envmap.values()):
            raise _err(path, f"{where}.env", "expected a table of strings")
        opts = a.get("options", {})
        if not isinstance(opts, dict):
            raise _err(path, f"{where}.options", "expected a table")
        per = a.get("checks", {})
        if not isinstance(per, dict):
            raise _err(path, f"{where}.checks", "expected a table")
        for k, v in per.items():
            if k not in DEFAULT_CHECKS:
                raise _err(path, f"{where}.checks.{k}", f"unknown threshold; known: {', '.join(sorted(DEFAULT_CHECKS))}")
            _threshold(k, v, path, f"{where}.checks.{k}")
        _check_pairs({**checks, **per}, path, f"{where}.checks")
        agent_checks[aname] = dict(per)
        hrole = _str(a.get("handoff_role", ""), path, f"{where}.handoff_role")
        ahost = _str(a.get("host", LOCAL_HOST), path, f"{where}.host")
        if ahost != LOCAL_HOST and ahost not in hosts:
            raise _err(path, f"{where}.host", f"{ahost!r} is not a host; add [[hosts]] name = {ahost!r}, or use one of "
                       f"{', '.join([LOCAL_HOST, *hosts])}")
        schedule = _str(a.get("schedule", ""), path, f"{where}.schedule")
        if schedule:
            from croniter import croniter

            if role != Role.JOB:
                raise _err(path, f"{where}.schedule", "only agents with role = \"job\" have a schedule")
            if not croniter.is_valid(schedule):
                raise _err(path, f"{where}.schedule", f"{schedule!r} is not a cron expression; e.g. \"0 3 * * 1\" (Mondays 03:00 UTC)")
        agents.append(
            AgentSpec(
                name=aname,
                role=role,
                backend=_str(a.get("backend", default_backend), path, f"{where}.backend"),
                model=_str(a.get("model", default_model), path, f"{where}.model"),
                workdir=workdir,
                prompt_file=prompt_file,
                handoff_role=hrole,
                env=dict(envmap),
                options=dict(opts),
                schedule=schedule,
                host=ahost,
            )
        )

    handoffs: tuple[HandoffRule, ...] = DEFAULT_HANDOFFS
    if "handoff" in raw:
        hs = raw["handoff"]
        if not isinstance(hs, list):
            raise _err(path, "handoff", "expected an array of tables [[handoff]]")
        rules = []
        for i, h in enumerate(hs):
            where = f"handoff[{i}]"
            if not isinstance(h, dict):
                raise _err(path, where, "expected a table with prefix, to, message")
            for req in ("prefix", "to"):
                if req not in h:
                    raise _err(path, f"{where}.{req}", "missing; a handoff rule needs prefix and to")
            to = _str(h["to"], path, f"{where}.to")
            if not any(to in (ag.name, ag.handoff_role) for ag in agents):
                raise _err(path, f"{where}.to", f"{to!r} names no agent or handoff_role; fix the name")
            rules.append(HandoffRule(_str(h["prefix"], path, f"{where}.prefix"), to,
                                     _str(h.get("message", DEFAULT_HANDOFFS[0].message), path, f"{where}.message")))
        handoffs = tuple(rules)

    pats: dict[str, list[dict[str, Any]]] = {}
    pat_versions: dict[str, str] = {}
    for bname, table in _table(raw, "patterns", path).items():
        if not isinstance(table, dict) or not isinstance(table.get("rules", []), list):
            raise _err(path, f"patterns.{bname}", "expected a table with rules = [{id, state, regex, ...}]")
        pats[bname] = table.get("rules", [])
        if "version" in table:
            if not isinstance(table["version"], str) or not re.match(r"^\d+(?:\.\d+)*$", table["version"]):
                raise _err(path, f"patterns.{bname}.version", "expected a CLI version string such as \"2.1.197\"")
            pat_versions[bname] = table["version"]
    if "prices" in raw or "budget" in raw:  # token prices and daily budgets (ccci.cost)
        from ccci.cost import PriceError, validate_budget, validate_prices

        try:
            if "prices" in raw:
                validate_prices(raw["prices"], path)
            if "budget" in raw:
                validate_budget(raw["budget"], path, [a.name for a in agents])
        except PriceError as exc:
            raise ConfigError(str(exc)) from None

    return FleetConfig(
        path=path, root=root, name=name, state_dir=state_dir, tmux_socket=sock, tick_seconds=tick, idle_exit=idle_exit,
        idle_tick_seconds=idle_tick,
        git=git, checks=checks, agents=[a for a in agents if a.host == this_host], agent_checks=agent_checks,
        handoffs=handoffs, patterns=pats, pattern_versions=pat_versions, raw=raw, metrics=_metrics(raw, path),
        web=_web(raw, path), hosts=hosts, this_host=this_host, all_agents=agents,
        context_windows=_context_windows(raw, path),
    )


def _context_windows(raw: dict, path: Path) -> dict[str, int]:
    """``[context_windows]``: ``"model pattern" = tokens`` (a whole number >= 1).

    :raises ConfigError: one line naming the key and the fix."""
    out: dict[str, int] = {}
    for pattern, tokens in _table(raw, "context_windows", path).items():
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise _err(path, f"context_windows.{pattern}",
                       f"{tokens!r} is not allowed; use the window in tokens, a whole number, e.g. 200000")
        out[str(pattern)] = tokens
    return out
