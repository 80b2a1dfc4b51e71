"""``ccci web``: serve the fleet's live dashboard (:mod:`ccci.web`) with uvicorn."""
from __future__ import annotations

import click


@click.command()
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Where to listen (default: [web] listen in ccci.toml, else 127.0.0.1:8765). A non-loopback "
                   "address needs [web] allow_remote = true; every request then needs the token.")
@click.option("--token", "print_token", is_flag=True,
              help="Print the dashboard's token (created on first use, 0600 in the state directory) and exit.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between two looks at the fleet per open page.")
@click.option("--fleet", "fleet_dir", default=None, metavar="DIR",
              help="Fleet directory (default: ccci --fleet, $CCCI_FLEET or the current directory).")
@click.pass_context
def web(ctx: click.Context, listen: str | None, print_token: bool, poll: float, fleet_dir: str | None) -> None:
    """Serve the fleet's live dashboard: the fleet, each agent's screen and timeline, the
    event log; actions (send, restart, stop, start, job) need the token (--token)."""
    from ccci.commands.cli import build, fail, load_config, say
    from ccci.config import ConfigError, parse_listen
    from ccci.web import auth

    cfg = load_config(fleet_dir or ctx.obj["fleet"])
    if poll <= 0:
        fail(f"--poll {poll}: must be more than 0 seconds, e.g. --poll 1")
    try:
        token = auth.load_or_create_token(cfg.state_dir)
    except OSError as exc:
        fail(f"{auth.token_path(cfg.state_dir)}: cannot create the dashboard token ({exc}); check the state "
             "directory's permissions")
    if print_token:
        click.echo(token)
        return
    settings = cfg.web
    host, port = settings.host, settings.port
    if listen:
        try:
            host, port = parse_listen(listen, "ccci web", "--listen", "e.g. --listen 127.0.0.1:8765")
        except ConfigError as exc:
            fail(str(exc))
        if not auth.is_loopback(host) and not settings.allow_remote:
            fail(f"--listen {listen}: {host} is not a loopback address; add allow_remote = true to [web] in "
                 f"{cfg.path} if other machines may reach the dashboard (every request then needs the token)")
    try:
        import uvicorn

        from ccci.web.app import create_app
        from ccci.web.view import FleetView
    except ImportError as exc:
        fail(f"ccci web needs starlette and uvicorn ({exc}); pip install starlette uvicorn")
    app = create_app(lambda: FleetView(build(cfg)), token, host, port, poll=poll)
    import socket

    # bind here, so a port in use is one line of ours (uvicorn would log and exit 3)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"ccci web: cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --listen "
             f"or [web] listen in {cfg.path}", code=1)
    shown = f"[{host}]" if ":" in host else host
    say(f"ccci web: fleet {cfg.name} on http://{shown}:{port}/ ; actions need the token in "
        f"{auth.token_path(cfg.state_dir)} (ccci web --token prints it)")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
