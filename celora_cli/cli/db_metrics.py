"""`celora db metrics`: serve the health report as Prometheus metrics on /metrics."""

from __future__ import annotations

import typer

from celora_cli.cli import console
from celora_cli.cli.app import load_settings_from
from celora_cli.cli.console import safe
from celora_cli.cli.db import app
from celora_cli.errors import ExitCode


@app.command("metrics")
def metrics(
    ctx: typer.Context,
    port: int = typer.Option(9187, "--port", min=1, max=65535, help="TCP port to serve /metrics on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
) -> None:
    """Serve the health check as Prometheus metrics.

    Serve Prometheus metrics (README: Metrics): every scrape runs the health check within its timeout.

    Runs until Ctrl-C (exit 130) or SIGTERM (exit 0).
    Example: celora db metrics --port 9187 --host 0.0.0.0
    """
    import signal
    import threading

    from celora_cli.errors import ConfigError
    from celora_cli.health import check_database_health
    from celora_cli.metrics import serve

    settings = load_settings_from(ctx)
    check_database_health(settings)  # settings it cannot run with fail now (exit 3), not on every scrape
    try:
        stop = serve(lambda: _report_or_unhealthy(settings), host, port)
    except OSError as exc:
        raise ConfigError(f"celora db metrics cannot listen on {host}:{port} (--host/--port): "
                          f"{exc.strerror or exc}.",
                          "Choose a free port with --port, or stop what listens there (`ss -ltnp`).") from None
    console.err.print(f"Serving metrics on http://{safe(host)}:{port}/metrics (each scrape runs the health check, "
                      f"timeout {settings.health_timeout:g} s). Ctrl-C stops.")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())  # a service manager's stop is a normal end
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    finally:
        stop()


def _report_or_unhealthy(settings):
    """A scrape always gets metrics: a check that cannot run at all reports unhealthy with the reason."""
    from celora_cli.errors import CeloraError
    from celora_cli.health import UNHEALTHY, HealthReport, check_database_health

    try:
        return check_database_health(settings)
    except CeloraError as exc:
        return HealthReport(status=UNHEALTHY, latency=None, checks={}, problems=[exc.message])
