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
    generation (0 for fleet checks) and :meth:`ccci.model.Finding.fingerprint`; it ends
    when the hook that reported it runs again without reporting it: the agent's checks
    (scope: the agent's name) or the fleet checks (scope ``None``; a fleet finding may
    name an agent, e.g. a job request). Stored in the state database under
    ``occurrence.<scope or ->.<check>:<agent or ->`` as JSON ``{"fp", "gen", "retry_at"}``.
    """

    PREFIX = "occurrence."

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._scopes: dict[str, dict[str, dict]] = {}

    def _recs(self, scope: str | None) -> dict[str, dict]:
        key = scope or "-"
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

    @staticmethod
    def _id(finding: Finding) -> str:
        return f"{finding.check}:{finding.agent or '-'}"

    def _db_key(self, scope: str | None, ident: str) -> str:
        return f"{self.PREFIX}{scope or '-'}.{ident}"

    def observed(self, scope: str | None, findings: list[Finding]) -> None:
        """The checks of ``scope`` (an agent's name; ``None``: the fleet checks) ran and
        reported ``findings``: occurrences they no longer report have ended."""
        recs = self._recs(scope)
        if not recs:
            return
        present = {self._id(f) for f in findings}
        for ident in [i for i in recs if i not in present]:
            del recs[ident]
            self.store.delete(self._db_key(scope, ident))

    def due(self, scope: str | None, finding: Finding, generation: int, now: datetime) -> bool:
        """``True`` unless this occurrence was remedied and no retry is due yet."""
        rec = self._recs(scope).get(self._id(finding))
        if rec is None or rec.get("fp") != finding.fingerprint() or rec.get("gen") != generation:
            return True
        retry = rec.get("retry_at")
        return bool(retry) and now >= parse_utc(retry)

    def record(self, scope: str | None, finding: Finding, generation: int, result: RemedyResult,
               now: datetime) -> None:
        """Remember the outcome: a success (or a failure with ``retry_after_s``) holds
        the occurrence until ``retry_after_s`` has passed (for ever without one); a
        plain failure leaves it due on the next tick."""
        recs, ident = self._recs(scope), self._id(finding)
        if not result.ok and result.retry_after_s is None:
            if recs.pop(ident, None) is not None:
                self.store.delete(self._db_key(scope, ident))
            return
        retry = iso(now + timedelta(seconds=result.retry_after_s)) if result.retry_after_s is not None else None
        rec = {"fp": finding.fingerprint(), "gen": generation, "retry_at": retry}
        recs[ident] = rec
        self.store.put(self._db_key(scope, ident), json.dumps(rec))
