"""``ccci web``: a live dashboard of one fleet (Starlette on uvicorn, server-sent events,
plain HTML, CSS and hand-written JavaScript from :file:`ccci/web/static`).

* :mod:`ccci.web.ansi`: a pane capture with SGR escapes as escaped HTML spans;
* :mod:`ccci.web.auth`: the dashboard's token (a 0600 file in the state directory) and
  the request checks (Host, Origin, token);
* :mod:`ccci.web.view`: what the pages show, read from the state database and the
  fleet's tmux server with the functions ``ccci status`` uses;
* :mod:`ccci.web.app`: the ASGI application (pages, JSON, SSE, actions).

Security model: docs/dashboard.md.
"""
