"""``distillguard gateway``: run the enforcement reverse proxy in front of an OpenAI-compatible API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

EXIT_INPUT = 3  # exit codes of distillguard.cli (not imported: cli imports this module)
EXIT_CONFIG = 4


def gateway(
    upstream: str = typer.Option(..., "--upstream", help="Base URL of the OpenAI-compatible API to protect."),
    policy: Optional[Path] = typer.Option(None, "--policy",
                                          help="Policy YAML (docs/policy.md). Default: built-in shadow policy."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8088, "--port", help="Port to listen on."),
    state: str = typer.Option("distillguard-gateway.sqlite", "--state",
                              help="Online state and audit store: a SQLite path or a redis:// URL."),
    findings: Optional[Path] = typer.Option(None, "--findings",
                                            help="Findings dir (accounts.csv) from the last batch scan to load."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="Worker processes (more than 1 needs a redis:// --state)."),
    check: bool = typer.Option(False, "--check", help="Validate the policy and exit."),
    peer_intel: Optional[Path] = typer.Option(None, "--peer-intel",
                                              help="Folder of peers' STIX bundles (distillguard intel import/pull)."),
    forwarded_allow_ips: str = typer.Option(
        "127.0.0.1", "--forwarded-allow-ips",
        help="Comma-separated addresses or CIDRs of load balancers whose X-Forwarded-For names the client IP "
             "(used for peers' IP indicators); '*' trusts any sender. Others' X-Forwarded-For is ignored."),
) -> None:
    """Run the real-time enforcement gateway (secrets come from the environment: DISTILLGUARD_UPSTREAM_API_KEY,
    DISTILLGUARD_ADMIN_TOKEN, DISTILLGUARD_GUARDRAIL_API_KEY, DISTILLGUARD_KEY_HASH_SECRET, DISTILLGUARD_CANARY_SECRET,
    DISTILLGUARD_SHARING_KEY).

    Example: [bold]distillguard gateway --upstream https://api.example.com --policy examples/policy.yaml --port 8088[/]
    """
    from distillguard.gateway.policy import PolicyError, default_policy, load_policy

    try:
        pol = load_policy(policy) if policy else default_policy()
    except PolicyError as exc:
        typer.echo(f"error: invalid policy: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if check:
        typer.echo(f"policy ok: {len(pol.rules)} rules, mode {pol.mode}")
        return
    if not upstream.startswith(("http://", "https://")):
        typer.echo(f"error: --upstream must be an http(s) URL, got {upstream!r}", err=True)
        raise typer.Exit(2)
    if workers > 1 and not state.startswith(("redis://", "rediss://", "unix://")):
        typer.echo("error: --workers > 1 needs shared state: --state redis://...", err=True)
        raise typer.Exit(2)
    import json

    import uvicorn

    config = {"upstream": upstream, "policy": str(policy) if policy else None, "state": state,
              "findings": str(findings) if findings else None,
              "peer_intel": str(peer_intel) if peer_intel else None}
    try:
        app = app_from_config(config) if workers == 1 else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT)
    typer.echo(f"distillguard gateway: {pol.mode} mode, {len(pol.rules)} rules, upstream {upstream}, "
               f"listening on http://{host}:{port}" + (f" ({workers} workers)" if workers > 1 else ""), err=True)
    if app is not None:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=True,
                    forwarded_allow_ips=forwarded_allow_ips)
    else:
        os.environ[_CONFIG_ENV] = json.dumps(config)
        uvicorn.run("distillguard.gateway.commands:app_from_env", factory=True, workers=workers, host=host,
                    port=port, log_level="warning", access_log=False, proxy_headers=True,
                    forwarded_allow_ips=forwarded_allow_ips)


_CONFIG_ENV = "DISTILLGUARD_GATEWAY_CONFIG"


def app_from_config(config: dict):
    """Build the gateway app from CLI settings; secrets are read from the environment."""
    from distillguard.gateway.app import create_app
    from distillguard.gateway.policy import default_policy, load_policy

    pol = load_policy(config["policy"]) if config.get("policy") else default_policy()
    secret = os.environ.get(pol.key_hash_secret_env)
    return create_app(config["upstream"], pol, config["state"],
                      admin_token=os.environ.get("DISTILLGUARD_ADMIN_TOKEN") or None,
                      upstream_api_key=os.environ.get("DISTILLGUARD_UPSTREAM_API_KEY") or None,
                      guardrail_api_key=os.environ.get("DISTILLGUARD_GUARDRAIL_API_KEY") or None,
                      findings=config.get("findings"), key_hash_secret=secret.encode() if secret else None,
                      peer_intel=_peer_intel(config.get("peer_intel")))


def _peer_intel(folder: str | None):
    """Peers' bundles, verified with the sharing key from DISTILLGUARD_SHARING_KEY (docs/intel.md)."""
    if not folder:
        return None
    from distillguard.intel.peer import PeerIntel
    from distillguard.intel.stix import IntelError

    key = os.environ.get("DISTILLGUARD_SHARING_KEY")
    if not key:
        raise ValueError("--peer-intel needs the sharing key in DISTILLGUARD_SHARING_KEY")
    try:
        return PeerIntel.load(folder, key)
    except IntelError as exc:
        raise ValueError(f"--peer-intel: {exc}") from None


def app_from_env():
    """uvicorn factory for ``--workers`` > 1 (each worker process builds its own app)."""
    import json

    return app_from_config(json.loads(os.environ[_CONFIG_ENV]))
