"""Findings -> STIX 2.1 bundle (python ``stix2``), and the checks every bundle passes before it is trusted.

What a bundle holds (docs/intel.md): the producer's Identity; the project's Extension Definition; TLP
marking; one Campaign per campaign with the distillguard property extension (keyed template fingerprints,
masked SimHash signatures, behaviour signature); Indicators with STIX patterns (IPv4/IPv6 addresses and
ranges, autonomous systems, user agents, keyed payment fingerprints); an Intrusion Set the campaign is
attributed to; Attack Patterns for the MITRE ATLAS techniques with external references (and case study
AML.CS0056); ``indicates`` / ``uses`` / ``attributed-to`` Relationships; a Sighting with the request count.

Privacy: no prompt text leaves unless asked for; payment fingerprints, template ids and system-prompt ids
are HMAC-SHA256 under a key derived from the *sharing key* agreed between peers, so peers holding the key
match their own values without the raw ones ever travelling; template SimHashes are XOR-masked with a keyed
64-bit pad (Hamming distances survive, the values do not). Integrity: every object the producer creates
carries a MAC (HMAC-SHA256 of its canonical JSON under another key derived from the sharing key) in the
extension, so a peer detects any tampered object, whatever order a TAXII server returns objects in.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

import orjson

__all__ = ["EXTENSION_ID", "ATLAS_TECHNIQUES", "CASE_STUDY", "TLP", "SharingKey", "IntelError", "export_bundle",
           "validate_bundle", "stix_string", "object_mac", "NAMESPACE"]

#: uuid5 namespace for every deterministic id this project mints
NAMESPACE = uuid.UUID("6c3f3a52-6b1e-5d0c-9a57-5b1f4f0d2a11")
EXTENSION_ID = "extension-definition--" + str(uuid.UUID(
    bytes=hashlib.sha256(NAMESPACE.bytes + b"distillguard-campaign-extension-v1").digest()[:16], version=4))
EXTENSION_SCHEMA_URL = "https://github.com/distillguard/distillguard/blob/main/docs/intel.md#extension"
PRODUCER_CLASS = "organization"

#: ATLAS techniques a distillation campaign maps to (https://atlas.mitre.org, ids as of ATLAS 2026)
ATLAS_TECHNIQUES: dict[str, dict[str, str]] = {
    "AML.T0024.002": {"name": "Extract AI Model",
                      "description": "Querying an AI model's inference API to build a functional copy of it."},
    "AML.T0008.005": {"name": "AI Service Proxies",
                      "description": "Reaching the target through proxy or reseller services that hide who "
                                     "sends the queries."},
    "AML.T0005.001": {"name": "Train Proxy via Replication",
                      "description": "Training a proxy model on the target's replicated outputs."},
    "AML.T0054": {"name": "LLM Jailbreak",
                  "description": "Prompts that bypass the model's restrictions (here: to reveal hidden reasoning)."},
}
CASE_STUDY = {"source_name": "mitre-atlas", "external_id": "AML.CS0056",
              "url": "https://atlas.mitre.org/studies/AML.CS0056",
              "description": "Model Distillation Campaigns Targeting Anthropic Claude"}

TLP = {"white", "clear", "green", "amber", "red"}


class IntelError(ValueError):
    """A bundle or findings file that cannot be used; the message names the file, object and field."""


def checked_size(path, max_bytes: int, error: type[Exception] = IntelError) -> int:
    """The size of ``path``; raises ``error`` naming the file when it is unreadable or over ``max_bytes``."""
    from pathlib import Path

    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise error(f"{p}: cannot read: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise error(f"{p}: {size} bytes is over the size limit of {max_bytes} bytes")
    return size


def _tlp(level: str):
    import stix2

    level = level.lower()
    if level not in TLP:
        raise IntelError(f"--tlp: expected one of {', '.join(sorted(TLP))}, got {level!r}")
    return {"white": stix2.TLP_WHITE, "clear": stix2.TLP_WHITE, "green": stix2.TLP_GREEN,
            "amber": stix2.TLP_AMBER, "red": stix2.TLP_RED}[level]


class SharingKey:
    """The secret agreed between peers, and the sub-keys derived from it (hashing, masking, MACs)."""

    def __init__(self, key: bytes | str):
        if isinstance(key, str):
            key = key.encode()
        if not key or len(key) < 16:
            raise IntelError("sharing key: at least 16 bytes are needed")
        self._hash = hmac.new(key, b"distillguard/v1/identifier-hash", hashlib.sha256).digest()
        self._mac = hmac.new(key, b"distillguard/v1/object-mac", hashlib.sha256).digest()
        self.sig_pad = int.from_bytes(hmac.new(key, b"distillguard/v1/simhash-pad", hashlib.sha256).digest()[:8],
                                      "big", signed=True)
        self.key_id = hashlib.sha256(b"distillguard/v1/key-id" + key).hexdigest()[:16]

    def hash(self, kind: str, value: Any) -> str:
        """Keyed hash of an identifier (``kind`` separates namespaces: payment, template, system_prompt)."""
        return hmac.new(self._hash, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()

    def mask_sig(self, sig: int) -> int:
        return int(sig) ^ self.sig_pad

    def mac(self, data: bytes) -> str:
        return hmac.new(self._mac, data, hashlib.sha256).hexdigest()


def _canonical(obj: dict) -> bytes:
    """Canonical bytes of an object for its MAC: sorted keys, the MAC field itself left out."""
    o = dict(obj)
    ext = dict(o.get("extensions") or {})
    if EXTENSION_ID in ext:
        e = dict(ext[EXTENSION_ID])
        e.pop("mac", None)
        ext[EXTENSION_ID] = e
        o["extensions"] = ext
    return orjson.dumps(o, option=orjson.OPT_SORT_KEYS)


def object_mac(obj: dict, key: SharingKey) -> str:
    return key.mac(_canonical(obj))


def stix_string(value: str) -> str:
    """A STIX patterning string literal (quotes and backslashes escaped; control characters dropped)."""
    value = "".join(ch for ch in str(value) if ch >= " " and ch != "\x7f")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _uuid(*parts: Any) -> str:
    """A deterministic id in UUIDv4 form (STIX wants v4 for domain objects): re-exporting the same finding
    gives the same ids, so a TAXII collection keeps one object per finding instead of piling up copies."""
    h = hashlib.sha256(NAMESPACE.bytes + "\x1f".join(str(p) for p in parts).encode()).digest()
    return str(uuid.UUID(bytes=h[:16], version=4))


def _ts(s: str | None, default: datetime) -> datetime:
    if not s:
        return default
    try:
        return datetime.fromisoformat(str(s).replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return default


def _ip_patterns(ind: dict) -> list[tuple[str, str, str]]:
    """(indicator kind, value, pattern) for addresses and ranges; invalid values are skipped."""
    out = []
    for ip in ind.get("ips") or []:
        try:
            a = ipaddress.ip_address(str(ip))
        except ValueError:
            continue
        t = "ipv4-addr" if a.version == 4 else "ipv6-addr"
        out.append(("ip", str(a), f"[{t}:value = {stix_string(str(a))}]"))
    for c in ind.get("cidrs") or []:
        try:
            n = ipaddress.ip_network(str(c), strict=False)
        except ValueError:
            continue
        t = "ipv4-addr" if n.version == 4 else "ipv6-addr"
        out.append(("cidr", str(n), f"[{t}:value ISSUBSET {stix_string(str(n))}]"))
    return out


def export_bundle(campaigns_doc: dict, *, producer: str, sharing_key: SharingKey | bytes | str,
                  tlp: str = "amber", only_flagged: bool = True, include_prompts: bool = False,
                  source: str = "campaigns.json") -> dict:
    """A STIX 2.1 bundle (as a JSON-ready dict) for the campaigns of a findings ``campaigns.json``."""
    import stix2
    import stix2.exceptions

    key = sharing_key if isinstance(sharing_key, SharingKey) else SharingKey(sharing_key)
    if not producer or not producer.strip():
        raise IntelError("--producer: the producer's name is required")
    camps = campaigns_doc.get("campaigns") if isinstance(campaigns_doc, dict) else None
    if not isinstance(camps, list):
        raise IntelError(f"{source}: campaigns: expected a list (see docs/architecture.md)")
    marking = _tlp(tlp)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    generated = _ts(campaigns_doc.get("generated_at"), now)
    ident_id = "identity--" + _uuid("identity", producer)
    common = {"created_by_ref": ident_id, "object_marking_refs": [marking.id]}
    objs: list[Any] = [marking]
    objs.append(stix2.Identity(id=ident_id, name=producer, identity_class=PRODUCER_CLASS, created=generated,
                               modified=generated, description="API provider sharing distillation-campaign "
                               "intelligence (distillguard)", object_marking_refs=[marking.id],
                               extensions=_ext({"kind": "producer", "key_id": key.key_id})))
    objs.append(stix2.ExtensionDefinition(
        id=EXTENSION_ID, created_by_ref=ident_id, created=datetime(2026, 1, 1, tzinfo=timezone.utc),
        modified=datetime(2026, 1, 1, tzinfo=timezone.utc), name="distillguard distillation campaign",
        description="Keyed prompt-template fingerprints, masked SimHash signatures, behaviour signature and "
                    "per-object MAC for distillation campaigns.",
        schema=EXTENSION_SCHEMA_URL, version="1.0.0", extension_types=["property-extension"]))
    patterns: dict[str, Any] = {}
    for tid, info in ATLAS_TECHNIQUES.items():
        patterns[tid] = stix2.AttackPattern(
            id="attack-pattern--" + _uuid("atlas", tid), created=generated, modified=generated,
            name=info["name"], description=info["description"],
            external_references=[{"source_name": "mitre-atlas", "external_id": tid,
                                  "url": f"https://atlas.mitre.org/techniques/{tid}"}, CASE_STUDY],
            extensions=_ext({"kind": "atlas-technique"}), **common)
    used_patterns: set[str] = set()
    for i, c in enumerate(camps):
        if not isinstance(c, dict) or not c.get("campaign_id"):
            raise IntelError(f"{source}: campaigns[{i}]: campaign_id: missing")
        if only_flagged and not c.get("flagged"):
            continue
        try:
            objs.extend(_campaign_objects(c, key, producer, ident_id, common, generated, patterns, used_patterns,
                                          include_prompts, source, i))
        except (ValueError, TypeError, stix2.exceptions.STIXError) as exc:
            if isinstance(exc, IntelError):
                raise
            raise IntelError(f"{source}: campaigns[{i}] ({c.get('campaign_id')}): {exc}") from None
    objs.extend(patterns[t] for t in ATLAS_TECHNIQUES if t in used_patterns)
    out = []
    for o in objs:
        d = orjson.loads(o.serialize())
        if d["type"] not in ("marking-definition", "extension-definition"):
            d["extensions"][EXTENSION_ID]["mac"] = object_mac(d, key)
        out.append(d)
    return {"type": "bundle", "id": "bundle--" + str(uuid.uuid4()), "objects": out}


def _ext(props: dict) -> dict:
    return {EXTENSION_ID: {"extension_type": "property-extension", **props}}


def _campaign_objects(c: dict, key: SharingKey, producer: str, ident_id: str, common: dict, generated: datetime,
                      patterns: dict, used: set, include_prompts: bool, source: str, i: int) -> list:
    import stix2

    cid = str(c["campaign_id"])
    first = _ts(c.get("first_seen"), generated)
    last = max(_ts(c.get("last_seen"), generated), first)
    ind = c.get("indicators") or {}
    if not isinstance(ind, dict):
        raise IntelError(f"{source}: campaigns[{i}].indicators: expected an object")
    behaviour = {
        "score": float(c.get("score") or 0.0), "n_accounts": int(c.get("n_accounts") or 0),
        "requests": int(c.get("requests") or 0), "reasoning_tokens": int(c.get("reasoning_tokens") or 0),
        "capabilities": {str(k): float(v) for k, v in (c.get("capabilities") or {}).items()},
        "benchmarks": {str(k): float(v) for k, v in (c.get("benchmarks") or {}).items()},
        "link_kinds": sorted({str(e.get("kind")) for e in c.get("edges") or [] if isinstance(e, dict)}),
        "signals": sorted({str(e.get("signal")) for e in c.get("evidence") or [] if isinstance(e, dict)}),
    }
    ext = {"kind": "campaign", "campaign_ref": cid,
           "template_fingerprints": [key.hash("template", t) for t in ind.get("template_ids") or []],
           "template_sigs": [str(key.mask_sig(int(s))) for s in ind.get("template_sigs") or []],
           "system_prompt_fingerprints": [key.hash("system_prompt", s) for s in ind.get("system_prompt_ids") or []],
           "behaviour": behaviour}
    if include_prompts:
        ext["sample_prompts"] = [str(p)[:200] for p in c.get("sample_prompts") or []]
    camp_id = "campaign--" + _uuid("campaign", producer, cid)
    caps = ", ".join(f"{k} {v:.0%}" for k, v in list(behaviour["capabilities"].items())[:3]) or "unknown"
    campaign = stix2.Campaign(
        id=camp_id, created=generated, modified=generated, name=f"{producer} distillation campaign {cid}",
        description=(f"Suspected distillation campaign over {behaviour['n_accounts']} accounts and "
                     f"{behaviour['requests']} requests; capabilities: {caps}."),
        first_seen=first, last_seen=last, objective="Harvest model outputs and reasoning to train a copy",
        external_references=[CASE_STUDY], extensions=_ext(ext), **common)
    out: list[Any] = [campaign]
    actor_id = "intrusion-set--" + _uuid("intrusion-set", producer, cid)
    out.append(stix2.IntrusionSet(
        id=actor_id, created=generated, modified=generated, name=f"Operator of {producer} campaign {cid}",
        description="Unnamed operator of the accounts in this campaign (proxy or reseller network).",
        first_seen=first, last_seen=last, resource_level="organization", primary_motivation="organizational-gain",
        extensions=_ext({"kind": "operator"}), **common))
    out.append(_rel(campaign.id, "attributed-to", actor_id, producer, common, generated))
    tids = [a.get("id") for a in c.get("atlas") or [] if isinstance(a, dict) and a.get("id") in ATLAS_TECHNIQUES]
    tids = list(dict.fromkeys(tids + ["AML.T0024.002", "AML.T0005.001"]))
    for t in tids:
        used.add(t)
        out.append(_rel(campaign.id, "uses", patterns[t].id, producer, common, generated))
    inds: list[tuple[str, str, str, str]] = [(k, v, p, f"{k} {v}") for k, v, p in _ip_patterns(ind)]
    for asn in ind.get("asns") or []:
        try:
            n = int(str(asn).upper().removeprefix("AS"))
        except ValueError:
            continue
        inds.append(("asn", str(n), f"[autonomous-system:number = {n}]", f"AS{n}"))
    for ua in ind.get("user_agents") or []:
        if isinstance(ua, str) and ua:
            inds.append(("user_agent", ua, "[network-traffic:extensions.'http-request-ext'.request_header."
                         f"'User-Agent' = {stix_string(ua[:512])}]", "user agent"))
    for pf in ind.get("payment_fingerprints") or []:
        h = key.hash("payment", pf)
        inds.append(("payment", h, f"[x-distillguard-payment:hmac_sha256 = '{h}']",
                     f"payment fingerprint (keyed hash {h[:12]})"))
    for kind, value, pattern, label in inds:
        ind_obj = stix2.Indicator(
            id="indicator--" + _uuid("indicator", producer, cid, kind, value), created=generated,
            modified=generated, name=f"{cid}: {label}"[:250],
            description=f"{kind} shared by accounts of distillation campaign {cid}",
            indicator_types=["malicious-activity"], pattern=pattern, pattern_type="stix", valid_from=first,
            extensions=_ext({"kind": "indicator", "indicator_kind": kind}), **common)
        out.append(ind_obj)
        out.append(_rel(ind_obj.id, "indicates", campaign.id, producer, common, generated))
    out.append(stix2.Sighting(
        id="sighting--" + _uuid("sighting", producer, cid), created=generated, modified=generated,
        sighting_of_ref=campaign.id, where_sighted_refs=[ident_id], first_seen=first, last_seen=last,
        count=min(int(c.get("requests") or 0), 999_999_999),
        description=f"requests from {behaviour['n_accounts']} accounts",
        extensions=_ext({"kind": "sighting", "n_accounts": behaviour["n_accounts"]}), **common))
    return out


def _rel(src: str, rtype: str, dst: str, producer: str, common: dict, when: datetime):
    import stix2

    return stix2.Relationship(id="relationship--" + _uuid("rel", producer, src, rtype, dst), created=when,
                              modified=when, source_ref=src, relationship_type=rtype, target_ref=dst,
                              extensions=_ext({"kind": "relationship"}), **common)


# ------------------------------------------------------------------------------------------- validation
def validate_bundle(bundle: Any, *, source: str = "bundle", max_objects: int = 100_000) -> list[str]:
    """Problems with a bundle dict (empty when clean): OASIS stix2-validator errors per object, plus the
    structural checks this project relies on. Warnings of the validator are not problems."""
    from stix2validator import ValidationOptions, validate_instance

    if not isinstance(bundle, dict) or bundle.get("type") != "bundle":
        return [f"{source}: not a STIX bundle (expected an object with type 'bundle')"]
    objs = bundle.get("objects")
    if not isinstance(objs, list):
        return [f"{source}: objects: expected a list"]
    if len(objs) > max_objects:
        return [f"{source}: {len(objs)} objects is over the limit of {max_objects}"]
    problems: list[str] = []
    try:
        res = validate_instance(bundle, ValidationOptions(version="2.1"))
    except Exception as exc:  # the validator raises on some malformed input instead of reporting
        return [f"{source}: the STIX validator failed: {type(exc).__name__}: {exc}"]
    if not res.is_valid:
        for e in res.errors[:50]:
            problems.append(f"{source}: {e}")
    for k, o in enumerate(objs):
        if not isinstance(o, dict):
            problems.append(f"{source}: objects[{k}]: not an object")
    return problems


def iter_producer_objects(objs: Iterable[dict]) -> Iterable[dict]:
    for o in objs:
        if isinstance(o, dict) and o.get("type") not in ("marking-definition", "extension-definition"):
            yield o
