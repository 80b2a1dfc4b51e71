"""Secrets never reach events, logs or notifications: :func:`collect_secrets` finds the
values to hide, :class:`Redactor` replaces them with ``***``."""
from __future__ import annotations

import os
import re
from typing import Any

from ccci.config import FleetConfig

SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.I)


def collect_secrets(config: FleetConfig, environ: dict[str, str] | None = None) -> list[str]:
    """Values that must never appear in events or logs: environment variables (and
    agents' ``env``, and ``[opencode] env``) whose names look secret (KEY, TOKEN,
    SECRET, PASSWORD, AUTH...), at least 6 characters long. Longest first, so a secret containing another is
    redacted whole."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if SECRET_NAME_RE.search(k) and len(v) >= 6}
    # every host's agents: a secret of another host's agent may still reach this host's text
    for spec in (getattr(config, "all_agents", None) or config.agents):
        values |= {v for k, v in spec.env.items() if SECRET_NAME_RE.search(k) and len(v) >= 6}
    serve_env = (config.raw.get("opencode") or {}).get("env") if isinstance(config.raw.get("opencode"), dict) else None
    if isinstance(serve_env, dict):  # the shared opencode serve's environment (provider keys)
        values |= {str(v) for k, v in serve_env.items() if SECRET_NAME_RE.search(str(k)) and len(str(v)) >= 6}
    return sorted(values, key=len, reverse=True)


class Redactor:
    """Replaces every secret value of a fleet (:func:`collect_secrets`) by ``***``."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets

    def text(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***``."""
        for value in self.secrets:
            if value in text:
                text = text.replace(value, "***")
        return text

    def data(self, value: Any) -> Any:
        """A JSON-able value with every string redacted (dicts and lists walked)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value
