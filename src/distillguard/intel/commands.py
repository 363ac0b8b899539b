"""``distillguard intel export|import|push|pull`` and ``distillguard attribute``.

Secrets come from the environment, never from the command line: the sharing key agreed with peers
(``DISTILLGUARD_SHARING_KEY``), the TAXII password (``DISTILLGUARD_TAXII_PASSWORD``) and the canary secret
(``DISTILLGUARD_CANARY_SECRET``); each option ``--*-env`` names another variable.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer

EXIT_INTERNAL = 1  # exit codes of distillguard.cli (not imported: cli imports this module)
EXIT_INPUT = 3
EXIT_CONFIG = 4

intel_app = typer.Typer(name="intel", no_args_is_help=True, rich_markup_mode="rich",
                        help="Share distillation-campaign intelligence with peers (STIX 2.1 bundles, TAXII 2.1).")

_KEY_ENV = "DISTILLGUARD_SHARING_KEY"


def _err(msg: str, code: int) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def _key(env: str):
    from distillguard.intel.stix import IntelError, SharingKey

    val = os.environ.get(env)
    if not val:
        raise _err(f"no sharing key: set {env} to the secret agreed with your peers", EXIT_CONFIG)
    try:
        return SharingKey(val)
    except IntelError as exc:
        raise _err(f"{env}: {exc}", EXIT_CONFIG)


def _write_json(obj: dict, out: Path) -> None:
    import orjson

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2))
    tmp.replace(out)


@intel_app.command("export")
def export(
    findings: Path = typer.Option(..., "--findings", help="Findings folder of a scan (campaigns.json) or the file."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the STIX 2.1 bundle (JSON)."),
    producer: str = typer.Option(..., "--producer", help="Your organisation's name as peers will see it."),
    tlp: str = typer.Option("amber", "--tlp", help="TLP marking: clear | green | amber | red."),
    all_campaigns: bool = typer.Option(False, "--all-campaigns", help="Also export campaigns that were not flagged."),
    include_prompts: bool = typer.Option(False, "--include-prompts",
                                         help="Also send the first 200 characters of sample prompts (off: no prompt text leaves)."),
    key_env: str = typer.Option(_KEY_ENV, "--key-env", help="Environment variable holding the sharing key."),
) -> None:
    """Turn a scan's campaigns into a STIX 2.1 bundle (validated with the OASIS validator before it is written).

    Example: [bold]DISTILLGUARD_SHARING_KEY=... distillguard intel export --findings out --out bundle.json --producer "Example AI"[/]
    """
    import orjson

    from distillguard.intel.stix import IntelError, export_bundle, validate_bundle

    key = _key(key_env)
    path = findings / "campaigns.json" if findings.is_dir() else findings
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise _err(f"{path}: cannot read: {exc.strerror or exc}", EXIT_INPUT)
    except orjson.JSONDecodeError as exc:
        raise _err(f"{path}: not valid JSON: {exc}", EXIT_INPUT)
    try:
        bundle = export_bundle(doc, producer=producer, sharing_key=key, tlp=tlp, only_flagged=not all_campaigns,
                               include_prompts=include_prompts, source=str(path))
    except IntelError as exc:
        raise _err(str(exc), EXIT_INPUT if str(path) in str(exc) else 2)
    problems = validate_bundle(bundle, source=str(out))
    if problems:  # our own output failing validation is a bug, not the user's fault
        raise _err("the exported bundle does not validate: " + "; ".join(problems[:5]), EXIT_INTERNAL)
    _write_json(bundle, out)
    n = {}
    for o in bundle["objects"]:
        n[o["type"]] = n.get(o["type"], 0) + 1
    typer.echo(f"wrote {out}: {n.get('campaign', 0)} campaigns, {n.get('indicator', 0)} indicators, "
               f"{len(bundle['objects'])} objects (TLP:{tlp.upper()}; validates clean)")


@intel_app.command("import")
def import_(
    bundles: List[Path] = typer.Argument(..., help="Peers' STIX 2.1 bundles (JSON)."),
    into: Path = typer.Option(Path("peer-intel"), "--into",
                              help="Peer-intel folder to add them to (read by scan --peer-intel and the gateway)."),
    key_env: str = typer.Option(_KEY_ENV, "--key-env", help="Environment variable holding the sharing key."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Require every object's MAC under the sharing key (off: accept other tools' bundles)."),
    max_mb: float = typer.Option(32.0, "--max-mb", help="Largest bundle accepted, in MiB."),
) -> None:
    """Validate peers' bundles (size, STIX validity, MACs) and add the good ones to the peer-intel folder.

    Any rejected bundle is named with the reason and the command exits 3; accepted ones are still added.

    Example: [bold]distillguard intel import peer-bundle.json --into peer-intel[/]
    """
    from distillguard.intel.peer import PeerIntel, load_bundle
    from distillguard.intel.stix import IntelError

    key = _key(key_env) if verify or os.environ.get(key_env) else None
    bad = 0
    for b in bundles:
        try:
            bundle = load_bundle(b, key, verify=verify, max_bytes=int(max_mb * (1 << 20)))
            pi = PeerIntel(key)
            n = pi.add_bundle(bundle, verify=False, source=str(b))
        except IntelError as exc:
            typer.echo(f"rejected: {exc}", err=True)
            bad += 1
            continue
        peers = sorted({c.peer for c in pi.campaigns.values()})
        dest = into / f"{_safe(peers[0] if peers else 'peer')}-{bundle['id'].split('--')[-1][:8]}.json"
        _write_json(bundle, dest)
        typer.echo(f"imported {b} -> {dest}: peer {', '.join(peers) or '?'}; {len(pi.campaigns)} campaigns, "
                   f"{n} indicators and fingerprints" + (f", {pi.ignored_indicators} indicators not understood"
                                                        if pi.ignored_indicators else ""))
    if bad:
        raise typer.Exit(EXIT_INPUT)


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "peer"


@intel_app.command("push")
def push_cmd(
    bundle: Path = typer.Argument(..., help="Bundle to send (from intel export)."),
    url: str = typer.Option(..., "--url", help="TAXII 2.1 collection URL (…/api-root/collections/ID/)."),
    user: Optional[str] = typer.Option(None, "--user", help="TAXII user (HTTP basic auth)."),
    password_env: str = typer.Option("DISTILLGUARD_TAXII_PASSWORD", "--password-env",
                                     help="Environment variable holding the TAXII password."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify the server's TLS certificate."),
) -> None:
    """Add a bundle's objects to a TAXII 2.1 collection.

    Example: [bold]distillguard intel push bundle.json --url https://taxii.example.org/api1/collections/ID/[/]
    """
    from distillguard.intel.peer import read_bundle_file
    from distillguard.intel.stix import IntelError, validate_bundle
    from distillguard.intel.taxii import push

    try:
        b = read_bundle_file(bundle)
        problems = validate_bundle(b, source=str(bundle))
        if problems:
            raise IntelError("; ".join(problems[:5]))
        st = push(b, url, user=user, password=os.environ.get(password_env), verify=not insecure)
    except IntelError as exc:
        raise _err(str(exc), EXIT_INPUT)
    typer.echo(f"pushed {bundle} to {url}: {st['success']} added, {st['failure']} already there or refused, "
               f"{st['pending']} pending")


@intel_app.command("pull")
def pull_cmd(
    url: str = typer.Option(..., "--url", help="TAXII 2.1 collection URL."),
    into: Path = typer.Option(Path("peer-intel"), "--into", help="Peer-intel folder to write the pulled bundle to."),
    user: Optional[str] = typer.Option(None, "--user", help="TAXII user (HTTP basic auth)."),
    password_env: str = typer.Option("DISTILLGUARD_TAXII_PASSWORD", "--password-env",
                                     help="Environment variable holding the TAXII password."),
    added_after: Optional[str] = typer.Option(None, "--added-after", help="Only objects added after this time (RFC 3339)."),
    key_env: str = typer.Option(_KEY_ENV, "--key-env", help="Environment variable holding the sharing key."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Require every object's MAC under the sharing key."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify the server's TLS certificate."),
) -> None:
    """Pull a TAXII 2.1 collection, validate and MAC-check it, and add it to the peer-intel folder.

    Example: [bold]distillguard intel pull --url https://taxii.example.org/api1/collections/ID/ --into peer-intel[/]
    """
    from distillguard.intel.peer import PeerIntel, load_bundle
    from distillguard.intel.stix import IntelError
    from distillguard.intel.taxii import pull

    key = _key(key_env) if verify else None
    try:
        b = pull(url, user=user, password=os.environ.get(password_env), verify=not insecure, added_after=added_after)
        b = load_bundle(b, key, source=url, verify=verify)
        pi = PeerIntel(key)
        n = pi.add_bundle(b, verify=False, source=url)
    except IntelError as exc:
        raise _err(str(exc), EXIT_INPUT)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = into / f"taxii-{stamp}.json"
    _write_json(b, dest)
    peers = sorted({c.peer for c in pi.campaigns.values()})
    typer.echo(f"pulled {len(b['objects'])} objects -> {dest}: peers {', '.join(peers) or 'none'}; "
               f"{len(pi.campaigns)} campaigns, {n} indicators and fingerprints")


# ------------------------------------------------------------------------------------------- attribute
def attribute(
    suspect: List[Path] = typer.Argument(..., help="Suspect text: JSONL (.jsonl/.jsonl.gz; text/completion/response/"
                                                  "messages fields) or plain text files."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="Gateway state (SQLite): test the accounts and weeks "
                                                              "it actually canaried."),
    account: Optional[List[str]] = typer.Option(None, "--account", help="Account to test (repeatable)."),
    accounts_file: Optional[Path] = typer.Option(None, "--accounts",
                                                 help="File of accounts to test: accounts.csv (account_id column) or one per line."),
    since: Optional[str] = typer.Option(None, "--since", help="With --account/--accounts: first day (YYYY-MM-DD)."),
    until: Optional[str] = typer.Option(None, "--until", help="With --account/--accounts: last day (default today)."),
    bucket_days: float = typer.Option(7.0, "--bucket-days", help="Canary rotation period the gateway used, in days."),
    alpha: float = typer.Option(0.01, "--alpha", help="Family-wise significance level (Bonferroni)."),
    top: int = typer.Option(10, "--top", help="Rows to print."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full result as JSON."),
    secret_env: str = typer.Option("DISTILLGUARD_CANARY_SECRET", "--secret-env",
                                   help="Environment variable holding the gateway's canary secret."),
) -> None:
    """Test suspect text (a leaked dataset, a suspect model's outputs) for our accounts' canaries.

    Prints, per (account, week) tested, how strongly the text uses that account's canary phrasings and the
    p-value against chance, Bonferroni-corrected over everything tested. See docs/canaries.md for the limits.

    Example: [bold]distillguard attribute leaked.jsonl --audit gateway-state.sqlite --since 2026-03-01[/]
    """
    from distillguard.intel.canary import (CanaryError, attribute as run, hypotheses_for_accounts,
                                           hypotheses_from_audit, read_suspect_texts, slot_counts)

    secret = os.environ.get(secret_env)
    if not secret:
        raise _err(f"no canary secret: set {secret_env} to the secret the gateway used", EXIT_CONFIG)
    if not 0 < alpha < 1:
        raise _err("--alpha must be between 0 and 1", 2)
    bucket_s = int(round(bucket_days * 86400))
    if bucket_s <= 0:
        raise _err("--bucket-days must be > 0", 2)
    try:
        hyps = []
        if audit is not None:
            try:
                hyps += hypotheses_from_audit(audit, bucket_s)
            except FileNotFoundError as exc:
                raise CanaryError(str(exc)) from None
        names = list(account or [])
        if accounts_file is not None:
            names += _read_accounts(accounts_file)
        if names:
            if not since:
                raise _err("--account/--accounts need --since (the first day the canaries could have been served)", 2)
            t0, t1 = _day(since, "--since"), _day(until, "--until") + 86399 if until else datetime.now(timezone.utc).timestamp()
            hyps += hypotheses_for_accounts(names, t0, t1, bucket_s)
        hyps = list(dict.fromkeys(hyps))
        if not hyps:
            raise _err("nothing to test: give --audit, --account or --accounts", 2)
        import numpy as np

        counts, n_texts = None, 0
        for p in suspect:
            texts = read_suspect_texts(p)
            n_texts += len(texts)
            c = slot_counts(texts)
            counts = c if counts is None else counts + c
        report = run(np.asarray(counts), hyps, secret, bucket_s=bucket_s, alpha=alpha)
        report.n_texts = n_texts
    except CanaryError as exc:
        raise _err(str(exc), EXIT_INPUT)
    from rich.console import Console
    from rich.table import Table

    tbl = Table(title=f"canary attribution: {n_texts} texts, {report.slots_seen} slots seen, "
                      f"{report.hypotheses} (account, period) tested")
    for c in ("account", "period from", "slots matched", "statistic (null mean)", "p-value", "p adjusted", ""):
        tbl.add_column(c)
    for r in report.results[:top]:
        tbl.add_row(r.account_id, r.bucket_start[:10], f"{r.slots_matched}/{r.slots_seen}",
                    f"{r.statistic:.2f} ({r.expected:.2f})", f"{r.p_value:.2e}", f"{r.p_adjusted:.2e}",
                    "[bold red]significant[/]" if r.significant else "")
    Console().print(tbl)
    sig = report.significant()
    typer.echo(f"{len(sig)} significant at family-wise alpha {alpha}" +
               (": " + ", ".join(sorted({r.account_id for r in sig})) if sig else ""))
    if json_out is not None:
        _write_json(report.to_dict(), json_out)


def _day(s: str, opt: str) -> float:
    try:
        return datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise _err(f"{opt}: expected YYYY-MM-DD, got {s!r}", 2)


def _read_accounts(path: Path) -> list[str]:
    import csv

    from distillguard.intel.canary import CanaryError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CanaryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    lines = text.splitlines()
    if lines and "account_id" in lines[0].split(","):
        rows = list(csv.DictReader(lines))
        return [r["account_id"] for r in rows if r.get("account_id")]
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def load_peer_intel(folder: Path, console=None, key_env: str = _KEY_ENV):
    """``scan --peer-intel``: the peer-intel folder as a :class:`PeerIntel` (exits 3 or 4 with a clear error)."""
    from distillguard.intel.peer import PeerIntel
    from distillguard.intel.stix import IntelError

    key = _key(key_env)
    try:
        pi = PeerIntel.load(folder, key)
    except IntelError as exc:
        raise _err(f"--peer-intel: {exc}", EXIT_INPUT)
    if console is not None:
        console.print(f"peer intel: {pi.bundles} bundles, {len(pi.campaigns)} campaigns, {len(pi)} indicators")
    return pi
