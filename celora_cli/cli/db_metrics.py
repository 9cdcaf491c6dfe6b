"""`celora db metrics`: serve the health report as Prometheus metrics on /metrics."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe
from celora_cli.errors import ExitCode

DEFAULT_CACHE_SECONDS = 10.0  # below Prometheus' usual 15 s scrape interval: each scrape still gets a new check


@app.command("metrics")
def metrics(
    ctx: typer.Context,
    port: int = typer.Option(9187, "--port", min=1, max=65535, help="TCP port to serve /metrics on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Only this machine by default; "
                             "any other address exposes the metrics (database, pool and replica names) to its "
                             "network, and celora warns."),
    cache_seconds: float = typer.Option(DEFAULT_CACHE_SECONDS, "--cache-seconds", min=0, max=3600,
                                        help="Reuse a health report for this many seconds (0: a new check per "
                                        "scrape). Checks never overlap: concurrent scrapes share one."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another Host header name to answer to (the "
                                         "name scrapers use in their URL; repeatable; '*' turns the check off). "
                                         "Always allowed: the --host address and, on loopback, localhost."),
) -> None:
    """Serve the health check as Prometheus metrics.

    Serve Prometheus metrics (README: Metrics) from the health check, one check at a time, cached briefly.

    Runs until Ctrl-C (exit 130) or SIGTERM (exit 0).
    Example: celora db metrics --port 9187
    """
    import math
    import signal
    import threading

    from celora_cli.errors import ConfigError
    from celora_cli.ops.health import check_database_health
    from celora_cli.ops.metrics import serve
    from celora_cli.safety.local_http import allowed_host_names, allowed_hosts, is_loopback, listen_host, url_host

    host = listen_host(host, command="celora db metrics")
    if not math.isfinite(cache_seconds):  # Click's range lets nan through
        raise ConfigError(f"--cache-seconds must be a number of seconds, not {cache_seconds}.",
                          "Pass a number from 0 to 3600, e.g. --cache-seconds 10.")
    names, any_host = allowed_host_names(allow_host)
    settings = load_settings_from(ctx)
    check_database_health(settings)  # settings it cannot run with fail now (exit 3), not on every scrape
    try:
        stop = serve(lambda: _report_or_unhealthy(settings), host, port, max_age=cache_seconds,
                     hosts=allowed_hosts(host, port, names), any_host=any_host)
    except OSError as exc:
        raise ConfigError(f"celora db metrics cannot listen on {host}:{port} (--host/--port): "
                          f"{exc.strerror or exc}.",
                          "Choose a free port with --port, or stop what listens there (`ss -ltnp`).") from None
    if not is_loopback(host):
        output.err.print(f"Warning: /metrics on {safe(host)} is reachable from the network: anyone who can reach "
                         f"port {port} reads the database's, pools' and replicas' names and makes it run health "
                         "checks. Prefer --host 127.0.0.1 with the scraper on this machine, or a firewall.")
    cached = f"a report is reused for {cache_seconds:g} s" if cache_seconds else "each scrape runs a new check"
    output.err.print(f"Serving metrics on http://{safe(url_host(host))}:{port}/metrics (one health check at a "
                     f"time, timeout {settings.health_timeout:g} s; {cached}). Ctrl-C stops.")
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
    from celora_cli.ops.health import UNHEALTHY, HealthReport, check_database_health

    try:
        return check_database_health(settings)
    except CeloraError as exc:
        return HealthReport(status=UNHEALTHY, latency=None, checks={}, problems=[exc.message])
