"""The outbox: queued messages delivered to agents that are ready for input, each
typed, submitted and verified (:func:`ccci.send.deliver`), oldest first, one per
agent per tick; and after a watcher restart, messages it left half-sent.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ccci.faultpoint import fault_point
from ccci.model import PaneInfo
from ccci.tmux import TmuxError

if TYPE_CHECKING:  # pragma: no cover
    from ccci.send import SendResult
    from ccci.supervisor import Supervisor

#: s a freshly launched agent's own prompt gets before queued messages are typed anyway,
#: for backends with ``launch_prompt_after_box``: a CLI given its prompt on the command
#: line that draws an idle box before it submits it.
#: Claude Code 2.1.332 submitted its launch prompt 2.2 s after SessionStart, and a
#: message typed 1.3 s after the start was lost in between (issue 14 e2e, 2026-12-02)
FIRST_TURN_WAIT_S = 60.0
RECOVER_PROBE_CHARS = 100  #: non-blank characters of a 'sending' message looked for after a watcher restart
#: s after a turn ends (a busy agent seen idle) before a queued message is typed, for a
#: backend that does not report its turns (:meth:`ccci.backends.base.Backend.turn_activity`
#: is ``None``): the CLI may still be writing the turn's records, and turn-end checks
#: (compact_before_limit) go first. Claude Code with ccci's hooks does not need it: it
#: reads idle only once its transcript recorded the turn (on 2 busy cores that took more
#: than this 1 s, the CI failure of issue 16)
TURN_SETTLE_S = 1.0
#: s without a change of the pane after which a CLI's report of a running turn is taken
#: for a lost end report (as ccci.backends.claude.claude_hooks.STALE_BUSY_S)
RUNNING_STALE_S = 30.0
MAX_DELIVERY_ROUNDS = 3  #: delivery rounds (each with its own Enter retries) before a message fails


TYPING_LOCK_WAIT_S = 30.0  #: s a delivery waits for another process typing into the same pane


@contextlib.contextmanager
def _pane_typing_lock(state_dir: Path, agent: str):
    """One typist per pane across processes (a watcher and concurrent ``ccci send``s):
    an exclusive ``flock`` on ``<state_dir>/locks/typing.<agent>.lock``, waited for up to
    :data:`TYPING_LOCK_WAIT_S`; yields whether it was taken at once (when another process
    held it, it waits for that process to finish and yields ``False``: the caller queues
    the message again and looks at the agent anew). Two processes typing at once
    interleave their keys into one garbled line (seen with 4 concurrent sends on 2 busy
    cores)."""
    import fcntl
    import time

    d = Path(state_dir) / "locks"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(d / f"typing.{agent}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # another process is typing: wait for it to finish, then let the caller look
            # at the agent again (it is most likely busy with that message now)
            end = time.monotonic() + TYPING_LOCK_WAIT_S
            while time.monotonic() < end:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    break
                except BlockingIOError:
                    time.sleep(0.05)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class Outbox:
    """Message delivery for a :class:`ccci.supervisor.Supervisor`."""

    def __init__(self, sup: "Supervisor") -> None:
        self.sup = sup
        #: agent -> (tick, monotonic s) it was first seen idle (since it was last seen in another state)
        self.ready_since: dict[str, tuple[int, float]] = {}
        #: agents seen busy before their current idle stretch began (a turn just ended)
        self.busy_before: set[str] = set()
        self._tracked_tick: int | None = None  #: the tick :meth:`_track_turn_ends` last ran in

    def deliver_now(self, name: str, text: str) -> "SendResult":
        """Type ``text`` into the agent's pane now and verify the submission."""
        from ccci.send import SendResult, deliver

        sup = self.sup
        rt = sup.agents[name]
        if not rt.pane_id:
            return SendResult(False, 0, "no pane")
        plugin = sup.backend_plugins.get(rt.backend.name, rt.backend.name)

        def accepted(since: float) -> bool | None:
            return sup.calls.guarded(plugin, f"{rt.backend.name}.prompt_accepted_since",
                                     rt.backend.prompt_accepted_since, rt.spec, sup.config, since, default=None)

        with _pane_typing_lock(sup.config.state_dir, name) as got:
            if not got:
                return SendResult(False, 0, "another process is typing into this agent's pane", retry_later=True)
            started = sup.clock.monotonic()
            res = deliver(sup.tmux, rt.pane_id, rt.backend, text, sup.config.settings_for(name), sup.clock,
                          tmpdir=sup.config.state_dir / "tmp", accepted=accepted)
        if res.typed:
            rt.typed_mono = started
        rt.last_change_key = None  # re-read the screen next tick
        rt.typed_tick = sup.tick_no  # no queued message after it this tick: e.g. /compact is running
        return res

    def deliver_pending(self, only: int | None = None) -> None:
        """Deliver queued messages to agents that are ready for input, oldest first,
        one per agent per tick.

        :param only: a message id: deliver that message alone (``ccci send`` without a
            watcher; the other processes' messages are theirs to type).
        """
        sup = self.sup
        self._track_turn_ends()
        for msg in sup.store.pending_messages():
            if only is not None and msg.id != only:
                continue
            rt = sup.agents.get(msg.agent)
            if rt is None:
                sup.store.finish_message(msg.id, "failed", "no such agent", sup.clock.now(), msg.attempts)
                continue
            if rt.stopped or rt.given_up or rt.pending_since_mono is not None or not rt.pane_id:
                continue
            if rt.typed_tick == sup.tick_no:
                continue  # typed into this tick already (a remedy's command): this tick's screen is stale
            plugin = sup.backend_plugins.get(rt.backend.name, rt.backend.name)
            mono = sup.clock.monotonic()
            launched_wall = sup.clock.now().timestamp() - (mono - rt.started_mono)
            activity = sup.calls.guarded(plugin, f"{rt.backend.name}.turn_activity", rt.backend.turn_activity,
                                         rt.spec, sup.config, launched_wall, rt.conversation_id or "", default=None)
            if activity is not None:
                if not self._turn_over(rt, activity, mono):
                    continue  # the CLI says a turn (the launch prompt's) is running: a message would join it
            elif rt.first_turn_pending and getattr(rt.backend, "launch_prompt_after_box", False):
                if mono - rt.started_mono < FIRST_TURN_WAIT_S:
                    continue  # its launch prompt's turn has not been seen yet
                rt.first_turn_pending = False
            if not sup.calls.guarded(plugin, f"{rt.backend.name}.is_ready_for_input", rt.backend.is_ready_for_input,
                                     rt.analysis, default=False) and not _own_draft(rt.analysis, msg.text):
                continue
            since = self.ready_since.get(rt.name)
            # the settle is for CLIs that do not report their turns: one that does (Claude
            # Code's hooks) shows idle only once the turn's records are written
            # (ccci.backends.claude.claude_hooks), and this tick's checks have read them
            if only is None and activity is None and since is not None and rt.name in self.busy_before \
                    and (since[0] == sup.tick_no or sup.clock.monotonic() - since[1] < TURN_SETTLE_S):
                # its turn just ended: the CLI's records of the turn may still be being
                # written (Claude Code 2.1.332's Stop hook wakes the runner before the
                # answer's usage is in the transcript), and checks that act at a turn's end
                # (compact_before_limit) read them meanwhile: messages go after the settle
                continue
            # where the agent's pane log ends now: after a watcher crash, recovery looks
            # for the message only in what the pane printed after this point
            if not sup.store.mark_sending(msg.id, f"log_offset={_file_size(sup.log_dir / f'{rt.name}.log')}"):
                continue  # another process (a watcher, a concurrent 'ccci send') is typing it
            try:
                res = self.deliver_now(rt.name, msg.text)
            except Exception as exc:
                # the pane or the whole tmux server vanished while typing (kill -9 of the
                # server, seen by the chaos soak, bench/soak.py): the row must not stay
                # 'sending' until the next watcher start. Decided as a new watcher would:
                # delivered if its text reached the pane log, else queued again.
                self.recover_sending({}, only=msg.id)
                if not isinstance(exc, TmuxError):
                    raise
                sup.emit("message_retry", f"tmux failed while typing ({' '.join(str(exc).split())[:160]}); "
                         f"{sup.store.message(msg.id)['status']} again", agent=rt.name, message_id=msg.id)
                return  # the next tick sees what is left of tmux (a lost server is restored)
            if not res.delivered and res.typed and not res.draft_left:
                # typed, Enter pressed, and our draft has left the box, with no proof either
                # way: the CLI most likely took it, and typing it again could deliver it
                # twice (issue 14). A message is typed again only when its draft is still there.
                res = replace(res, delivered=True, detail=f"typed and submitted, not confirmed ({res.detail})")
                sup.emit("message_unconfirmed", f"counted delivered without proof: {res.detail}", agent=rt.name,
                         message_id=msg.id)
            if res.delivered:
                fault_point("after_type")
            status = "delivered" if res.delivered else ("queued" if res.retry_later else "failed")
            if status == "failed" and msg.attempts + 1 < MAX_DELIVERY_ROUNDS:
                status = "queued"  # try again on a later tick (e.g. after the agent's restart)
                sup.emit("message_retry", f"not delivered yet ({res.detail}); will retry", agent=rt.name,
                         message_id=msg.id)
            if status == "queued":
                sup.store.requeue_message(msg.id, count_attempt=True)
            else:
                sup.store.finish_message(msg.id, status, res.detail, sup.clock.now(), msg.attempts + res.attempts)
                sup.emit("message_delivered" if res.delivered else "message_failed",
                         f"{'delivered' if res.delivered else 'NOT delivered'}: {res.detail}; {msg.text[:80]!r}",
                         agent=rt.name, message_id=msg.id, attempts=res.attempts, latency_s=round(
                             (sup.clock.now() - msg.queued_at).total_seconds(), 3))

    def _turn_over(self, rt, activity, mono: float) -> bool:
        """Whether the CLI's own turn reports (:class:`ccci.backends.base.TurnActivity`)
        let a message be typed now: not while the launch prompt's turn has not ended
        (Claude Code 2.1.332 takes its launch prompt ~2 s after it draws an idle box, and a
        message typed before or during that turn joins it: two ``UserPromptSubmit``, one
        ``Stop``, issue 16), nor while any turn runs. A launch whose prompt was never taken
        stops being waited for after :data:`FIRST_TURN_WAIT_S`; a report of a running turn
        is trusted until the pane has not changed for :data:`RUNNING_STALE_S` (a lost
        ``Stop`` must not hold the queue forever; the screen must also read ready)."""
        stale = mono - rt.content_changed_mono >= RUNNING_STALE_S
        if rt.launch_turn_open:
            if activity.ended or (not activity.started and mono - rt.started_mono >= FIRST_TURN_WAIT_S):
                rt.launch_turn_open = rt.first_turn_pending = False
            elif not stale:
                return False
        return not activity.running or stale

    def _track_turn_ends(self) -> None:
        """Note, once per tick, the tick each agent's busy turn ended (:attr:`ready_since`;
        :attr:`busy_before` holds the agents whose last state before it was busy)."""
        from ccci.model import AgentState

        sup = self.sup
        if self._tracked_tick == sup.tick_no:
            return
        self._tracked_tick = sup.tick_no
        for name, rt in sup.agents.items():
            state = getattr(rt.analysis, "state", None)
            if state == AgentState.BUSY:
                self.busy_before.add(name)
                self.ready_since.pop(name, None)
            elif state == AgentState.IDLE:
                if name not in self.ready_since:
                    self.ready_since[name] = (sup.tick_no, sup.clock.monotonic())
                elif (self.ready_since[name][0] != sup.tick_no
                      and sup.clock.monotonic() - self.ready_since[name][1] >= TURN_SETTLE_S):
                    self.busy_before.discard(name)
            else:
                self.ready_since.pop(name, None)

    def recover_sending(self, panes: dict[str, PaneInfo], only: int | None = None) -> None:
        """Messages left in state 'sending' by a killed watcher: delivered if their text
        shows in the agent's pane log after the point where the typing began (recorded in
        the row's ``detail``; the screen when there is no log), else queued again (so a
        ping is delivered once).

        The probe is the first :data:`RECOVER_PROBE_CHARS` non-blank characters of the
        message, compared with all whitespace removed (a wrapped line splits words):
        long enough to hold a ping's commit sha, so two pings never match each other.

        :param only: a message id: decide that message alone (a delivery that raised).
        """
        sup = self.sup
        for row in sup.store.sending_messages():
            if only is not None and row["id"] != only:
                continue
            rt = sup.agents.get(row["agent"])
            pane = panes.get(rt.session) if rt else None
            if rt is not None and pane is not None and not pane.dead:
                screen = sup.tmux.capture([pane.pane_id]).get(pane.pane_id, "")
                plugin = sup.backend_plugins.get(rt.backend.name, rt.backend.name)
                now = sup.calls.guarded(plugin, f"{rt.backend.name}.analyse", rt.backend.analyse, screen,
                                        pane.title, default=None)
                if now is not None and _own_draft(now, row["text"]):
                    # typed, never submitted: its echo is in the log, but it sits in the
                    # box; queued again, the outbox submits the draft (Enter only)
                    sup.store.requeue_message(row["id"])
                    continue
            m = re.match(r"log_offset=(\d+)$", row["detail"] or "")
            log = sup.log_dir / f"{rt.name}.log" if rt else None
            if m and log is not None and log.exists():
                # only what the pane printed after the typing began: an identical earlier
                # message on screen or in the log does not count
                seen = log_since(log, int(m.group(1)))
            else:
                seen = sup.tmux.capture([pane.pane_id]).get(pane.pane_id, "") if pane else ""
            probe = "".join(row["text"].split())[:RECOVER_PROBE_CHARS]
            if probe and probe in "".join(seen.split()):
                sup.store.finish_message(row["id"], "delivered", "seen on screen after watcher restart", sup.clock.now(), 1)
            else:
                sup.store.requeue_message(row["id"])


def _own_draft(analysis, text: str) -> bool:
    """The agent's input box holds ``text`` (or its start), typed but not submitted:
    a delivery interrupted between the typing and Enter (a watcher killed then, seen
    in the chaos soak: the agent sat in ``unsent_input`` with ccci's ping in its box
    for minutes, every later message queued behind it). :func:`ccci.send.deliver`
    then presses Enter on it instead of typing it again. Someone else's draft is
    never ours."""
    from ccci.model import AgentState
    from ccci.send import _ours

    return (getattr(analysis, "state", None) == AgentState.UNSENT_INPUT and bool(analysis.input_text)
            and _ours(analysis.input_text, text))


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_since(path: Path, offset: int, limit: int = 1 << 20) -> str:
    """An agent's pane log from byte ``offset`` (at most ``limit`` bytes) as text,
    escape sequences removed ("" when there is no log). A log shorter than ``offset``
    (rotated or recreated) is read from the start."""
    from ccci.send import ANSI_RE

    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(offset if offset <= size else 0)
            return ANSI_RE.sub("", fh.read(limit).decode("utf-8", "replace"))
    except OSError:
        return ""
