"""The dashboard's token and the checks every request passes.

The token is 32 random bytes (``secrets.token_urlsafe``), generated the first time
``ccci web`` runs and kept in ``<state_dir>/web-token`` (mode 0600, created with
``O_EXCL`` so two servers never write different ones). It is asked for:

* on every action (``POST /api/action``), in the ``X-CCCI-Token`` header or a
  ``token`` form field, compared with :func:`hmac.compare_digest`; a browser sends no
  such header to another site on its own, and no cookie is ever accepted, so a page on
  another site cannot act (CSRF);
* on every request, reads included, when the server listens on a non-loopback
  address: the header, ``Authorization: Bearer TOKEN``, or HTTP Basic with the token as
  password (a browser asks once and sends it on page loads and ``EventSource`` too).

Independently, a request whose ``Host`` is not the loopback name the server listens on
is refused when it listens on loopback (DNS rebinding), and an action whose ``Origin``
is not the server's own, or that a browser marks ``Sec-Fetch-Site: cross-site``, is
refused.
"""
from __future__ import annotations

import base64
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

TOKEN_FILE = "web-token"
TOKEN_HEADER = "x-ccci-token"


def token_path(state_dir: Path) -> Path:
    """Where the fleet's dashboard token lives: ``<state_dir>/web-token``."""
    return Path(state_dir) / TOKEN_FILE


def load_or_create_token(state_dir: Path) -> str:
    """The fleet's dashboard token; generated (0600, ``O_EXCL``) on first use.

    A file readable by others is made 0600 again (the token is a password).

    :raises OSError: when the state directory cannot be written or the file read.
    """
    path = token_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        tok = path.read_text().strip()
        if tok:
            return tok
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    tok = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(tok + "\n")
    return tok


def is_loopback(host: str) -> bool:
    """``True`` for 127.0.0.0/8, ::1 (and ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def presented_token(headers) -> str:
    """The token a request carries in ``X-CCCI-Token``, ``Authorization: Bearer`` or as
    the password of ``Authorization: Basic`` (``""``: none). ``headers``: a
    case-insensitive mapping (Starlette ``Headers``)."""
    tok = headers.get(TOKEN_HEADER, "")
    if tok:
        return tok.strip()
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode("utf-8", "replace").partition(":")[2]
        except ValueError:
            return ""
    return ""


def token_ok(presented: str, token: str) -> bool:
    """Constant-time comparison (:func:`hmac.compare_digest`); an empty token never matches."""
    return bool(presented) and hmac.compare_digest(presented.encode(), token.encode())


def host_ok(host_header: str, listen_host: str, port: int) -> bool:
    """``Host`` check against DNS rebinding: a server on loopback answers only to
    ``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT`` (or its own address); one on
    another address answers to any host (every request there needs the token)."""
    if not is_loopback(listen_host):
        return True
    name, _, p = host_header.rpartition(":") if host_header.count(":") == 1 or host_header.startswith("[") else (host_header, "", "")
    if not name:
        name, p = host_header, ""
    if p and p != str(port):
        return False
    return is_loopback(name.strip("[]")) or name.strip("[]") == listen_host


def origin_ok(headers) -> bool:
    """An action's ``Origin`` (when the client sent one) is this server
    (``http://<Host>``), and a browser did not mark it ``Sec-Fetch-Site: cross-site``."""
    if headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser (curl, a script): the token alone decides
    return origin == f"http://{headers.get('host', '')}"
