"""Escalations reach a person through the builtin notifiers: a shell-free command with
the event JSON on stdin, and a webhook POST; secrets never go out."""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from ccci import config as config_mod
from ccci.commands.init import render_config
from ccci.model import Finding, Remedy
from ccci.plugins import get_plugin_manager
from ccci.reporters.notify import drain
from ccci.state import StateStore
from ccci.supervisor import Supervisor


class _NoTmux:
    calls = 0

    def list_panes(self):
        return {}


def test_escalation_runs_command_and_posts_webhook(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_API_TOKEN", "tok-do-not-leak-123456")
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    out = tmp_path / "notified.json"
    script = tmp_path / "n.py"
    script.write_text(f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())\n")
    for a in ("builder", "adversary"):
        (tmp_path / "work" / a).mkdir(parents=True)
    (tmp_path / "ccci.toml").write_text(
        render_config("n", "", "main", "scripted")
        + f'\n[notify]\ncommand = ["{sys.executable}", "{script}"]\nwebhook = "http://127.0.0.1:{srv.server_port}/hook"\n'
    )
    cfg = config_mod.load(tmp_path, environ={})
    sup = Supervisor(cfg, get_plugin_manager(entrypoints=False), StateStore(cfg.state_dir), _NoTmux())
    sup.configure()
    why = "restart intensity exceeded; token tok-do-not-leak-123456"
    sup.run_remedy(Remedy("escalate", "builder", Finding("runner", "builder", why, evidence=why)))
    assert drain(10)  # delivery is on the notifier's worker thread, off the tick
    srv.shutdown()
    sent = json.loads(out.read_text())
    assert sent["kind"] == "escalation" and sent["agent"] == "builder" and sent["fleet"] == "n"
    assert got and got[0]["kind"] == "escalation"
    assert "tok-do-not-leak-123456" not in out.read_text() + json.dumps(got)
    assert sup.store.agent("builder").given_up
