"""Once per occurrence: which occurrence of a finding was remedied, kept in the state
database so that a watcher restart does not act on it again (see
:class:`ccci.model.RemedyResult` for what a result asks of it)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from ccci.clock import iso, parse_utc
from ccci.model import Finding, RemedyResult
from ccci.state import StateStore


class Occurrences:
    """Which occurrence of a finding was remedied (persisted: survives a restart).

    An occurrence is identified by the check, the agent, the agent's process
    generation and :meth:`ccci.model.Finding.fingerprint`; it ends when the check runs
    for that agent and does not report it. Stored in the state database under
    ``occurrence.<agent or ->.<check>`` as JSON ``{"fp", "gen", "retry_at"}``.
    """

    PREFIX = "occurrence."

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._scopes: dict[str, dict[str, dict]] = {}

    def _scope(self, agent: str | None) -> dict[str, dict]:
        key = agent or "-"
        if key not in self._scopes:
            prefix = f"{self.PREFIX}{key}."
            recs: dict[str, dict] = {}
            for k, v in self.store.items(prefix).items():
                try:
                    recs[k[len(prefix):]] = json.loads(v)
                except ValueError:
                    self.store.delete(k)
            self._scopes[key] = recs
        return self._scopes[key]

    def observed(self, agent: str | None, findings: list[Finding]) -> None:
        """The checks ran for ``agent`` (``None``: the fleet checks) and reported these:
        occurrences of checks that reported nothing have ended."""
        recs = self._scope(agent)
        if not recs:
            return
        present = {f.check for f in findings}
        for check in [c for c in recs if c not in present]:
            del recs[check]
            self.store.delete(f"{self.PREFIX}{agent or '-'}.{check}")

    def due(self, finding: Finding, generation: int, now: datetime) -> bool:
        """``True`` unless this occurrence was remedied and no retry is due yet."""
        rec = self._scope(finding.agent).get(finding.check)
        if rec is None or rec.get("fp") != finding.fingerprint() or rec.get("gen") != generation:
            return True
        retry = rec.get("retry_at")
        return bool(retry) and now >= parse_utc(retry)

    def record(self, finding: Finding, generation: int, result: RemedyResult, now: datetime) -> None:
        """Remember the outcome: a success (or a failure with ``retry_after_s``) holds
        the occurrence until ``retry_after_s`` has passed (for ever without one); a
        plain failure leaves it due on the next tick."""
        recs = self._scope(finding.agent)
        key = f"{self.PREFIX}{finding.agent or '-'}.{finding.check}"
        if not result.ok and result.retry_after_s is None:
            if recs.pop(finding.check, None) is not None:
                self.store.delete(key)
            return
        retry = iso(now + timedelta(seconds=result.retry_after_s)) if result.retry_after_s is not None else None
        rec = {"fp": finding.fingerprint(), "gen": generation, "retry_at": retry}
        recs[finding.check] = rec
        self.store.put(key, json.dumps(rec))
