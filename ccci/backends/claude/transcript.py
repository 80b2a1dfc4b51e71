"""Token usage and context use from Claude Code's transcript, read incrementally.

Claude Code writes one JSON object per line to
``$CLAUDE_CONFIG_DIR`` (default ``$HOME/.claude``) ``/projects/<slug>/<session id>.jsonl``
(the slug is the working directory with every non-alphanumeric character replaced by
``-``; ccci finds the file by the session id, ``projects/*/<id>.jsonl``). Measured with
Claude Code 2.1.332 against ccci's model server (recorded in
``tests/golden/claude-2.1.332-recorded/transcripts/usage_turns.jsonl``, the usage the
server sent beside it):

* an ``"type": "assistant"`` line per content block of a model answer, each with
  ``message.id`` (the API's ``msg_...``), ``requestId`` (``req_...``), ``message.model``,
  ``timestamp`` (ISO-8601 UTC) and ``message.usage``: ``input_tokens``,
  ``output_tokens``, ``cache_read_input_tokens``, ``cache_creation_input_tokens`` as the
  API reported them (the final values of the stream);
* the lines of one answer repeat the same ``message.id`` (and a streamed answer's early
  lines may carry a partial ``output_tokens``), so the lines are de-duplicated by
  ``message.id`` (else ``requestId``, else the line's ``uuid``), each counter the
  largest seen for that id;
* ``"isSidechain": true`` lines belong to a subagent: they count in the totals (they
  are tokens spent) but not in the main conversation's context use;
* after ``/compact`` a ``"type": "system", "subtype": "compact_boundary"`` line starts
  the compacted conversation, with ``compactMetadata`` ``{"trigger": "manual",
  "preTokens", "postTokens", ...}``: context use is then ``postTokens`` (``None`` when
  absent) until the next answer;
* the model calls of a compaction itself (2 calls in the e2e run: the summary, then one
  more) are NOT written as assistant lines: their tokens are not in the transcript, so
  ccci cannot count them (tests/e2e/test_claude_usage_real.py measures this).

Context use = input + cache read + cache write + output tokens of the newest main-chain
answer: the prompt the next call starts from (the sum Claude Code's own context
indicator uses).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ccci.usage import DaySums, JsonlCursor, UsageReading, add_counts, reading_of
from ccci.usage import nonneg_int as _int

#: transcript usage field -> ccci counter (:data:`ccci.state.USAGE_COUNTERS`)
FIELDS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
          "cache_read_input_tokens": "cache_read_tokens", "cache_creation_input_tokens": "cache_write_tokens"}


def config_dir(env: dict[str, str] | None = None) -> Path:
    """Claude Code's configuration directory for an agent's environment ``env`` (its
    ``[agents.env]`` over the watcher's): ``$CLAUDE_CONFIG_DIR``, else ``$HOME/.claude``."""
    merged = {**os.environ, **(env or {})}
    if merged.get("CLAUDE_CONFIG_DIR"):
        return Path(merged["CLAUDE_CONFIG_DIR"])
    return Path(merged.get("HOME") or Path.home()) / ".claude"


def transcript_path(conversation_id: str, env: dict[str, str] | None = None) -> Path | None:
    """The transcript of session ``conversation_id`` (``projects/*/<id>.jsonl`` under
    :func:`config_dir`), the newest when several projects have one; ``None`` when none."""
    if not conversation_id or "/" in conversation_id or conversation_id.startswith("."):
        return None
    found = list((config_dir(env) / "projects").glob(f"*/{conversation_id}.jsonl"))
    if not found:
        return None
    return max(found, key=lambda p: p.stat().st_mtime)


@dataclass
class TranscriptCursor(JsonlCursor):
    """An incremental reader of one transcript: call :meth:`read` again to fold in what
    the CLI appended since (a partial last line waits for its newline; a file that
    shrank or was replaced is read again from the start: :class:`ccci.usage.JsonlCursor`).

    Attributes:
        path, offset, inode: see :class:`ccci.usage.JsonlCursor`.
        messages: de-duplication key -> ``(day, model, {counter: tokens})``.
        context_tokens, model: see :class:`ccci.usage.UsageReading`.
        sums: ``(day, model) -> {counter: tokens}`` of :attr:`messages`, kept as lines are folded.
    """

    messages: dict[str, tuple[str, str, dict[str, int]]] = field(default_factory=dict)
    context_tokens: int | None = None
    model: str = ""
    sums: DaySums = field(default_factory=dict)

    def fold_line(self, line: bytes | str) -> None:
        """Fold one transcript line (bad JSON and other record types are skipped)."""
        try:
            rec = json.loads(line)
        except ValueError:
            return
        if not isinstance(rec, dict):
            return
        if rec.get("type") == "system" and rec.get("subtype") == "compact_boundary" and not rec.get("isSidechain"):
            meta = rec.get("compactMetadata") if isinstance(rec.get("compactMetadata"), dict) else {}
            post = meta.get("postTokens")
            self.context_tokens = int(post) if isinstance(post, int) and not isinstance(post, bool) else None
            return
        if rec.get("type") != "assistant":
            return
        msg = rec.get("message")
        usage = msg.get("usage") if isinstance(msg, dict) else None
        if not isinstance(usage, dict):
            return
        counts = {ours: _int(usage.get(theirs)) for theirs, ours in FIELDS.items()}
        model = str(msg.get("model") or "")
        if model == "<synthetic>":  # Claude Code's own messages (an API error shown as a reply): no call
            return
        key = str(msg.get("id") or rec.get("requestId") or rec.get("uuid") or "")
        if not key:
            return
        day = str(rec.get("timestamp") or "")[:10]
        old = self.messages.get(key)
        if old is not None:
            day, model, prev = old[0], old[1] or model, old[2]
            counts = {k: max(prev[k], counts[k]) for k in counts}
            add_counts(self.sums, old[0], old[1], old[2], -1)
        self.messages[key] = (day, model, counts)
        add_counts(self.sums, day, model, counts)
        if not rec.get("isSidechain"):
            self.context_tokens = sum(counts.values())
            self.model = model or self.model

    def reading(self, source: str, since_day: str | None = None) -> UsageReading:
        """The totals so far as a :class:`ccci.usage.UsageReading` (``source``: the key
        the totals are stored under; ``since_day``: only days ``>=`` it). Costs one entry
        per (day, model), not per message: the sums are kept as lines are folded."""
        return reading_of(((day, model, counts) for (day, model), counts in self.sums.items()), source, since_day,
                          context_tokens=self.context_tokens, model=self.model)


def read_file(path: Path, source: str | None = None) -> UsageReading:
    """The whole transcript at ``path`` at once (for tests and one-off reads).

    :raises OSError: when it cannot be read.
    """
    return TranscriptCursor(Path(path)).read_all(source)


__all__ = ["TranscriptCursor", "config_dir", "read_file", "transcript_path"]
