"""Peers' STIX bundles -> :class:`PeerIntel`, a matcher used by ``scan --peer-intel`` and the gateway.

Loading is defensive: a bundle is size-limited, must parse, must pass the OASIS stix2-validator, and (by
default) every object a peer created must carry a valid MAC under the shared key; anything else is rejected
with an :class:`IntelError` naming the file and object. Indicators this project does not understand (other
tools' patterns) are counted and ignored, never guessed at.

Matching: IP addresses and ranges, autonomous systems, user agents, keyed payment fingerprints, keyed
template and system-prompt fingerprints, and masked template SimHashes (Hamming distance <= 3). Each kind
weighs differently (a shared card is strong, a common user agent is weak): an account's peer score is
``1 - exp(-sum of the weights of the distinct kinds it matched)``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import orjson
import pyarrow as pa

from distillguard.intel.stix import (EXTENSION_ID, IntelError, SharingKey, checked_size, object_mac,
                                     validate_bundle)

__all__ = ["PeerIntel", "PeerMatch", "PeerCampaign", "load_bundle", "KIND_WEIGHT", "MAX_BUNDLE_BYTES",
           "MATCH_SCHEMA", "apply_to_scan"]

MAX_BUNDLE_BYTES = 32 << 20
MAX_OBJECTS = 100_000
SIG_MAX_HAMMING = 3

#: how much one kind of matched indicator weighs in an account's peer score
KIND_WEIGHT = {"payment": 1.0, "template": 0.7, "system_prompt": 0.7, "template_sig": 0.5, "ip": 0.5,
               "cidr": 0.25, "user_agent": 0.15, "asn": 0.05}
#: where and how traffic arrives, not who sends it: these add to a specific match but never count alone
CONTEXT_KINDS = ("cidr", "user_agent", "asn")
#: local inverse-frequency damping: a matched value shared by n local accounts weighs min(1, HUB_SOFT / n),
#: and nothing beyond HUB_MAX accounts
HUB_SOFT = {"payment": 50, "system_prompt": 30, "template": 10, "template_sig": 10, "ip": 8, "cidr": 8,
            "user_agent": 5, "asn": 5}
HUB_MAX = {"payment": 5000, "system_prompt": 1000, "template": 300, "template_sig": 300, "ip": 200, "cidr": 300,
           "user_agent": 300, "asn": 100}
#: kinds that describe the same thing count once (the heaviest)
_FAMILY = {"cidr": "ip", "template_sig": "template"}
#: kinds specific enough to tie two of our accounts together when both match one peer campaign (an address
#: is not: a campus NAT must not pull its users into a campaign)
STRONG_KINDS = ("payment", "template", "system_prompt")

MATCH_SCHEMA = pa.schema([
    pa.field("account_id", pa.string()), pa.field("peer", pa.string()), pa.field("campaign", pa.string()),
    pa.field("campaign_name", pa.string()), pa.field("indicator_kind", pa.string()),
    pa.field("indicator", pa.string()), pa.field("count", pa.int64())])

_STR = r"'((?:[^'\\]|\\.)*)'"
_PATTERNS = [
    ("ip", re.compile(r"^\[ipv[46]-addr:value = " + _STR + r"\]$")),
    ("cidr", re.compile(r"^\[ipv[46]-addr:value ISSUBSET " + _STR + r"\]$")),
    ("asn", re.compile(r"^\[autonomous-system:number = (\d+)\]$")),
    ("user_agent", re.compile(r"^\[network-traffic:extensions\.'http-request-ext'\.request_header\.'User-Agent' = "
                              + _STR + r"\]$")),
    ("payment", re.compile(r"^\[x-distillguard-payment:hmac_sha256 = '([0-9a-f]{64})'\]$")),
]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


@dataclass(frozen=True)
class PeerCampaign:
    id: str
    peer: str
    name: str
    campaign_ref: str
    score: float
    n_accounts: int
    first_seen: str | None
    last_seen: str | None


@dataclass(frozen=True)
class PeerMatch:
    peer: str
    campaign: str  # the peer's campaign reference (e.g. C0001)
    campaign_name: str
    indicator_kind: str
    indicator: str  # a human-checkable form (address, AS number, or a short keyed hash)

    @property
    def weight(self) -> float:
        return KIND_WEIGHT.get(self.indicator_kind, 0.1)


def read_bundle_file(path: str | Path, max_bytes: int = MAX_BUNDLE_BYTES) -> dict:
    p = Path(path)
    checked_size(p, max_bytes)
    with open(p, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise IntelError(f"{p}: over the bundle size limit of {max_bytes} bytes")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IntelError(f"{p}: not valid JSON: {exc}") from None


def load_bundle(bundle: dict | str | Path, key: SharingKey | None, *, source: str | None = None,
                verify: bool = True, max_bytes: int = MAX_BUNDLE_BYTES, max_objects: int = MAX_OBJECTS) -> dict:
    """A validated (and, with ``verify``, MAC-checked) bundle dict. Raises :class:`IntelError`."""
    if isinstance(bundle, (str, Path)):
        source = source or str(bundle)
        bundle = read_bundle_file(bundle, max_bytes)
    else:
        source = source or "bundle"
        if len(orjson.dumps(bundle)) > max_bytes:
            raise IntelError(f"{source}: over the bundle size limit of {max_bytes} bytes")
    problems = validate_bundle(bundle, source=source, max_objects=max_objects)
    if problems:
        raise IntelError("; ".join(problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""))
    if verify:
        if key is None:
            raise IntelError(f"{source}: a sharing key is needed to verify the bundle (or pass verify=False)")
        for k, o in enumerate(bundle["objects"]):
            if o.get("type") in ("marking-definition", "extension-definition"):
                continue
            ext = (o.get("extensions") or {}).get(EXTENSION_ID)
            mac = ext.get("mac") if isinstance(ext, dict) else None
            if not isinstance(mac, str):
                raise IntelError(f"{source}: objects[{k}] ({o.get('id')}): no distillguard MAC; not made by a "
                                 "distillguard peer (load with verification off to accept it)")
            if not _const_eq(mac, object_mac(o, key)):
                raise IntelError(f"{source}: objects[{k}] ({o.get('id')}): MAC mismatch: the object was altered "
                                 "after export, or the peer used another sharing key")
    return bundle


def _const_eq(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class PeerIntel:
    """Indicators and fingerprints from peers' bundles, ready to match our own traffic."""

    key: SharingKey | None
    campaigns: dict[str, PeerCampaign] = field(default_factory=dict)
    exact: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (kind, value) -> campaign ids
    cidrs: list[tuple[Any, str]] = field(default_factory=list)
    #: (ip version, prefix length) -> {network address as int: [(network, campaign id)]}
    _nets: dict[tuple[int, int], dict[int, list]] = field(default_factory=dict, repr=False)
    _sig_vals: Any = field(default=None, repr=False)  # uint64 array of the masked SimHashes
    sigs: list[tuple[int, str]] = field(default_factory=list)  # masked SimHash -> campaign id
    ignored_indicators: int = 0
    bundles: int = 0
    sources: list[str] = field(default_factory=list)
    has_templates: bool = False  # any template fingerprint loaded (the gateway then needs the request's template)

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, source: str | Path | dict | Sequence[str | Path | dict], sharing_key: SharingKey | bytes | str | None,
             *, verify: bool = True, max_bytes: int = MAX_BUNDLE_BYTES) -> "PeerIntel":
        """From a folder of ``*.json`` bundles, one bundle file or dict, or a list of them."""
        key = None if sharing_key is None else (
            sharing_key if isinstance(sharing_key, SharingKey) else SharingKey(sharing_key))
        if isinstance(source, (str, Path)) and Path(source).is_dir():
            items: list = sorted(Path(source).glob("*.json"))
            if not items:
                raise IntelError(f"{source}: no *.json bundles in this folder")
        elif isinstance(source, (str, Path, dict)):
            items = [source]
        else:
            items = list(source)
        pi = cls(key)
        for it in items:
            pi.add_bundle(it, verify=verify, max_bytes=max_bytes)
        return pi

    def add_bundle(self, bundle: dict | str | Path, *, verify: bool = True, max_bytes: int = MAX_BUNDLE_BYTES,
                   source: str | None = None) -> int:
        """Add one bundle; returns the number of indicators and fingerprints added."""
        src = source or (str(bundle) if isinstance(bundle, (str, Path)) else "bundle")
        b = load_bundle(bundle, self.key, source=src, verify=verify, max_bytes=max_bytes)
        objs = b["objects"]
        names = {o["id"]: o.get("name") or o["id"] for o in objs if o.get("type") == "identity"}
        by_id = {o["id"]: o for o in objs}
        added = 0
        for o in objs:
            if o.get("type") != "campaign":
                continue
            ext = (o.get("extensions") or {}).get(EXTENSION_ID) or {}
            peer = names.get(o.get("created_by_ref"), o.get("created_by_ref") or "unknown peer")
            beh = ext.get("behaviour") if isinstance(ext.get("behaviour"), dict) else {}
            self.campaigns[o["id"]] = PeerCampaign(
                o["id"], str(peer), str(o.get("name") or ""), str(ext.get("campaign_ref") or o["id"]),
                _num(beh.get("score"), float), _num(beh.get("n_accounts"), int), o.get("first_seen"),
                o.get("last_seen"))
            added += self._add_fingerprints(o, ext, src)
        for o in objs:
            if o.get("type") == "relationship" and o.get("relationship_type") == "indicates":
                ind, camp = by_id.get(o.get("source_ref")), o.get("target_ref")
                if ind is None or ind.get("type") != "indicator" or camp not in self.campaigns:
                    continue
                added += self._add_indicator(ind, camp)
        self.bundles += 1
        self.sources.append(src)
        self.has_templates = any(k == "template" for k, _ in self.exact)
        return added

    def _add_fingerprints(self, o: dict, ext: dict, src: str) -> int:
        n = 0
        for field_name, kind in (("template_fingerprints", "template"),
                                 ("system_prompt_fingerprints", "system_prompt")):
            vals = ext.get(field_name) or []
            if not isinstance(vals, list):
                raise IntelError(f"{src}: {o['id']}: extension {field_name}: expected a list")
            for v in vals:
                if not isinstance(v, str) or not _HEX64.match(v):
                    raise IntelError(f"{src}: {o['id']}: extension {field_name}: {str(v)[:40]!r} is not a "
                                     "64-hex-digit keyed hash")
                self.exact.setdefault((kind, v), set()).add(o["id"])
                n += 1
        sigs = ext.get("template_sigs") or []
        if not isinstance(sigs, list):
            raise IntelError(f"{src}: {o['id']}: extension template_sigs: expected a list")
        for s in sigs:
            try:
                v = int(s)
            except (TypeError, ValueError):
                raise IntelError(f"{src}: {o['id']}: extension template_sigs: {str(s)[:40]!r} is not an integer")
            if not -(1 << 63) <= v < (1 << 63):
                raise IntelError(f"{src}: {o['id']}: extension template_sigs: {v} is not a 64-bit value")
            self.sigs.append((v, o["id"]))
            n += 1
        return n

    def _add_indicator(self, ind: dict, camp: str) -> int:
        pat = str(ind.get("pattern") or "")
        for kind, rx in _PATTERNS:
            m = rx.match(pat)
            if not m:
                continue
            val = _unescape(m.group(1)) if kind in ("ip", "cidr", "user_agent") else m.group(1)
            if kind == "cidr":
                try:
                    net = ipaddress.ip_network(val, strict=False)
                    self.cidrs.append((net, camp))
                    self._nets.setdefault((net.version, net.prefixlen), {}).setdefault(
                        int(net.network_address), []).append((net, camp))
                except ValueError:
                    self.ignored_indicators += 1
                    return 0
                return 1
            if kind == "ip":
                try:
                    val = str(ipaddress.ip_address(val))
                except ValueError:
                    self.ignored_indicators += 1
                    return 0
            self.exact.setdefault((kind, val), set()).add(camp)
            return 1
        self.ignored_indicators += 1
        return 0

    # ----------------------------------------------------------------------------------- matching
    def __len__(self) -> int:
        return len(self.exact) + len(self.cidrs) + len(self.sigs)

    def _m(self, camp_id: str, kind: str, shown: str) -> PeerMatch:
        c = self.campaigns[camp_id]
        return PeerMatch(c.peer, c.campaign_ref, c.name, kind, shown)

    def _hashed(self, kind: str, value: Any) -> str | None:
        return self.key.hash(kind, value) if self.key is not None else None

    def match_request(self, ip: str | None = None, user_agent: str | None = None,
                      payment_fingerprint: str | None = None, template_id: str | None = None, *,
                      template_sig: int | None = None, asn: Any = None,
                      system_prompt_id: str | None = None) -> list[PeerMatch]:
        """Every peer indicator or fingerprint one request matches."""
        out: list[PeerMatch] = []
        if ip:
            out += self._match_ip(str(ip))
        if user_agent:
            out += [self._m(c, "user_agent", user_agent[:80]) for c in self.exact.get(("user_agent", user_agent), ())]
        if asn not in (None, ""):
            a = str(asn).upper().removeprefix("AS")
            out += [self._m(c, "asn", f"AS{a}") for c in self.exact.get(("asn", a), ())]
        for kind, raw in (("payment", payment_fingerprint), ("template", template_id),
                          ("system_prompt", system_prompt_id)):
            if raw:
                h = self._hashed(kind, raw)
                out += [self._m(c, kind, f"keyed:{h[:12]}") for c in self.exact.get((kind, h), ())]
        if template_sig is not None and self.sigs and self.key is not None:
            out += self._match_sigs(np.array([int(template_sig)], dtype=np.int64))[0]
        return out

    def _match_ip(self, ip: str) -> list[PeerMatch]:
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return []
        out = [self._m(c, "ip", str(a)) for c in self.exact.get(("ip", str(a)), ())]
        bits = 32 if a.version == 4 else 128
        ai = int(a)
        for (ver, plen), nets in self._nets.items():
            if ver == a.version:
                for n, c in nets.get(ai >> (bits - plen) << (bits - plen), ()):
                    out.append(self._m(c, "cidr", str(n)))
        return out

    def _match_sigs(self, sigs: np.ndarray) -> list[list[PeerMatch]]:
        """Peer SimHashes within :data:`SIG_MAX_HAMMING` bits of each of ``sigs`` (ours, unmasked)."""
        if self._sig_vals is None or len(self._sig_vals) != len(self.sigs):
            self._sig_vals = np.array([s for s, _ in self.sigs], dtype=np.int64).view(np.uint64)
        theirs = self._sig_vals
        mask = np.int64(self.key.sig_pad) if self.key is not None else np.int64(0)
        ours = (np.asarray(sigs, dtype=np.int64) ^ mask).view(np.uint64)
        out: list[list[PeerMatch]] = [[] for _ in range(len(ours))]
        step = max(1, 2_000_000 // max(1, len(theirs)))
        for i0 in range(0, len(ours), step):
            x = ours[i0:i0 + step, None] ^ theirs[None, :]
            dist = _POP8[x.view(np.uint8)].reshape(x.shape + (8,)).sum(axis=-1)
            for i, j in zip(*np.nonzero(dist <= SIG_MAX_HAMMING)):
                out[i0 + i].append(self._m(self.sigs[j][1], "template_sig", f"simhash~{int(dist[i, j])}"))
        return out

    def _ip_candidates(self, uniq: pa.Array) -> pa.Array:
        """The distinct addresses worth a closer look: IPv4 strings are tested in bulk (as 32-bit integers
        against the exact addresses and every range's prefix); anything else goes through one by one."""
        import pyarrow.compute as pc

        if len(uniq) == 0:
            return uniq
        uniq = uniq.cast(pa.string())
        v4 = pc.match_substring_regex(uniq, r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$").to_numpy(zero_copy_only=False)
        quads = pc.list_flatten(pc.split_pattern(uniq.filter(pa.array(v4)), ".")).cast(pa.int64()).to_numpy()
        q = quads.reshape(-1, 4)
        ok = (q <= 255).all(axis=1)
        ints = (q[:, 0] << 24) | (q[:, 1] << 16) | (q[:, 2] << 8) | q[:, 3]
        keys = [int(ipaddress.IPv4Address(v)) for k, v in self.exact if k == "ip" and "." in v]
        hit = np.isin(ints, np.array(keys, dtype=np.int64)) if keys else np.zeros(len(ints), bool)
        for (ver, plen), nets in self._nets.items():
            if ver == 4:
                hit |= np.isin(ints >> (32 - plen) << (32 - plen), np.array(list(nets), dtype=np.int64))
        keep = ~v4
        keep[np.flatnonzero(v4)[hit & ok]] = True
        return uniq.filter(pa.array(keep))

    def match_events(self, events: pa.Table, signals: pa.Table | None = None) -> pa.Table:
        """Per-account matches (:data:`MATCH_SCHEMA`: account_id, peer, campaign, campaign_name,
        indicator_kind, indicator, count) of an events table (and its signals, for template matches)."""
        rows: dict[tuple, int] = {}

        def scan_col(table: pa.Table, col: str, fn, prefilter=None) -> None:
            if table is None or col not in table.column_names or table.num_rows == 0:
                return
            import pyarrow.compute as pc

            vals = table.column(col)
            if pa.types.is_dictionary(vals.type):  # a scan keeps low-cardinality columns dictionary-encoded
                vals = vals.cast(vals.type.value_type)
            uniq = pc.unique(pc.drop_null(vals))
            if prefilter is not None:
                uniq = prefilter(uniq)
            hits = {u: fn(u) for u in uniq.to_pylist()}
            hits = {u: m for u, m in hits.items() if m}
            if not hits:
                return
            keep = pc.is_in(vals, value_set=pa.array(list(hits), type=vals.type))
            sub = table.filter(keep).select(["account_id", col])
            for acct, v in zip(sub.column("account_id").to_pylist(), sub.column(col).to_pylist()):
                for m in hits[v]:
                    k = (acct, m)
                    rows[k] = rows.get(k, 0) + 1

        scan_col(events, "ip", self._match_ip, self._ip_candidates)
        scan_col(events, "user_agent", lambda u: self.match_request(user_agent=u))
        scan_col(events, "asn", lambda a: self.match_request(asn=a))
        scan_col(events, "payment_fingerprint", lambda p: self.match_request(payment_fingerprint=p))
        if signals is not None:
            scan_col(signals, "template_id", lambda t: self.match_request(template_id=t))
            scan_col(signals, "system_prompt_id", lambda s: self.match_request(system_prompt_id=s))
            if self.sigs and self.key is not None and "template_sig" in signals.column_names:
                import pyarrow.compute as pc

                uniq = pc.unique(pc.drop_null(signals.column("template_sig"))).to_numpy()
                res = self._match_sigs(uniq.astype(np.int64)) if uniq.size else []
                hits = {int(u): m for u, m in zip(uniq, res) if m}
                if hits:
                    sub = signals.filter(pc.is_in(signals.column("template_sig"),
                                                  value_set=pa.array(list(hits), pa.int64())))
                    for acct, v in zip(sub.column("account_id").to_pylist(), sub.column("template_sig").to_pylist()):
                        for m in hits[v]:
                            rows[(acct, m)] = rows.get((acct, m), 0) + 1
        data = {n: [] for n in MATCH_SCHEMA.names}
        for (acct, m), n in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1].peer, kv[0][1].campaign,
                                                                 kv[0][1].indicator_kind, kv[0][1].indicator)):
            for k, v in (("account_id", acct), ("peer", m.peer), ("campaign", m.campaign),
                         ("campaign_name", m.campaign_name), ("indicator_kind", m.indicator_kind),
                         ("indicator", m.indicator), ("count", n)):
                data[k].append(v)
        return pa.table(data, schema=MATCH_SCHEMA)

    # ----------------------------------------------------------------------------------- scoring
    @staticmethod
    def score_matches(matches: Iterable[PeerMatch], damp: dict[tuple[str, str], float] | None = None) -> float:
        """``1 - exp(-sum over the distinct kinds matched of weight x damping)``. An address and its range (a
        template and its SimHash) count once, the heavier. Context kinds (range, user agent, AS) only add to a
        specific match (payment, template, system prompt, address): alone they never raise an account.
        ``damp[(kind, indicator)]`` (default 1) down-weights values that many local accounts share."""
        kinds: dict[str, float] = {}
        specific = False
        for m in matches:
            k = _FAMILY.get(m.indicator_kind, m.indicator_kind)
            w = m.weight * (damp.get((m.indicator_kind, m.indicator), 1.0) if damp else 1.0)
            kinds[k] = max(kinds.get(k, 0.0), w)
            specific |= m.indicator_kind not in CONTEXT_KINDS and w > 0
        if not specific:
            return 0.0
        return 1.0 - math.exp(-sum(kinds.values()))

    @staticmethod
    def local_counts(matches: pa.Table) -> dict[tuple[str, str], int]:
        """(kind, indicator) -> number of distinct local accounts matching it."""
        accts: dict[tuple[str, str], set] = {}
        for a, k, v in zip(matches.column("account_id").to_pylist(), matches.column("indicator_kind").to_pylist(),
                           matches.column("indicator").to_pylist()):
            accts.setdefault((k, v), set()).add(a)
        return {kv: len(s) for kv, s in accts.items()}

    @staticmethod
    def local_damping(counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], float]:
        """Inverse-frequency damping per matched value: ``min(1, HUB_SOFT[kind] / n)`` for a value ``n``
        local accounts share, 0 beyond ``HUB_MAX``. A peer's campus NAT address, a popular SDK user agent or a
        generic template then weighs little here, whatever the peer thought of it."""
        return {(k, v): 0.0 if n > HUB_MAX.get(k, 300) else min(1.0, HUB_SOFT.get(k, 10) / n)
                for (k, v), n in counts.items()}

    def account_scores(self, matches: pa.Table, *, damp: bool = True) -> dict[str, tuple[float, str]]:
        """account -> (peer score, evidence detail naming the peers and what matched); with ``damp``, values
        shared by many local accounts weigh less (:meth:`local_damping`)."""
        counts = self.local_counts(matches)
        dmp = self.local_damping(counts) if damp else None
        per: dict[str, list[dict]] = {}
        for r in matches.to_pylist():
            per.setdefault(r["account_id"], []).append(r)
        out = {}
        for acct, rs in per.items():
            ms = [PeerMatch(r["peer"], r["campaign"], r["campaign_name"], r["indicator_kind"], r["indicator"])
                  for r in rs]
            by_camp: dict[tuple[str, str], list[str]] = {}
            for r in rs:
                n = counts[(r["indicator_kind"], r["indicator"])]
                shared = f", {n} local accounts" if n > 1 else ""
                by_camp.setdefault((r["peer"], r["campaign"]), []).append(
                    f"{r['indicator_kind'].replace('_', ' ')} {r['indicator']} ({r['count']} requests{shared})")
            detail = "; ".join(f"peer {p!r} reported campaign {c}: " + ", ".join(v[:4]) + (
                f" and {len(v) - 4} more" if len(v) > 4 else "") for (p, c), v in sorted(by_camp.items()))
            out[acct] = (self.score_matches(ms, dmp), detail)
        return out

    # ----------------------------------------------------------------------------------- gateway
    def _wants_template(self) -> bool:
        return bool(self.sigs) or self.has_templates

    def apply_request(self, engine: Any, account_id: str, ip: str | None, user_agent: str | None,
                      body: dict | None = None, now: float | None = None) -> list[PeerMatch]:
        """Gateway hook: match one request and raise the account's ``campaign_risk`` in the gateway state
        to the peer score (never lowering it). Returns the matches."""
        sig = None
        if body is not None and self._wants_template():
            try:
                sig = engine.score(body)
            except Exception:  # the engine reports scorer failures itself, by its fail mode
                sig = None
        return self._apply(engine, account_id, ip, user_agent, sig)

    async def apply_request_async(self, engine: Any, account_id: str, ip: str | None, user_agent: str | None,
                                  body: dict | None = None) -> list[PeerMatch]:
        """:meth:`apply_request` scoring through the engine's micro-batcher (the decision then hits its cache)."""
        sig = None
        if body is not None and self._wants_template():
            try:
                sig = await engine.score_async(body)
            except Exception:
                sig = None
        return self._apply(engine, account_id, ip, user_agent, sig)

    def _apply(self, engine: Any, account_id: str, ip: str | None, user_agent: str | None,
               sig: dict | None) -> list[PeerMatch]:
        sig = sig or {}
        ms = self.match_request(ip=ip, user_agent=user_agent, template_id=sig.get("template_id"),
                                template_sig=sig.get("template_sig"))
        if not ms:
            return ms
        score = round(self.score_matches(ms), 4)
        try:
            st = engine.state.get(account_id)
            if score > st.campaign_risk + 1e-9:
                st.campaign_risk = score
                if not st.campaign_id:
                    st.campaign_id = f"peer:{ms[0].peer}:{ms[0].campaign}"[:200]
                engine.state.put(st)
        except Exception:  # StateError: the engine's own store handling applies on decide()
            pass
        return ms


def _num(v: Any, typ) -> Any:
    try:
        return typ(v)
    except (TypeError, ValueError):
        return typ(0)


_POP8 = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


# ----------------------------------------------------------------------------------------- scan hook
def apply_to_scan(peer: PeerIntel, events: pa.Table, signals: pa.Table | None, accounts: Sequence[str],
                  raw: np.ndarray, evidence: list[list[dict]], *, weight: float = 1.5
                  ) -> tuple[np.ndarray, pa.Table, pa.Table]:
    """Fold peer intel into a scan: adds ``weight * peer_score`` to each matched account's raw score with an
    evidence item naming the peer, and returns ``(raw, matches, peer_intel edges)``; the edges tie our
    accounts that match one peer campaign through a specific indicator (payment, template, IP)."""
    from distillguard.linking.edges import EDGE_SCHEMA

    matches = peer.match_events(events, signals)
    raw = np.array(raw, dtype=float, copy=True)
    if matches.num_rows == 0:
        return raw, matches, EDGE_SCHEMA.empty_table()
    index = {a: i for i, a in enumerate(accounts)}
    for acct, (s, detail) in peer.account_scores(matches).items():
        i = index.get(acct)
        if i is None or s <= 0:
            continue
        raw[i] += weight * s
        evidence[i].append({"signal": "peer_intel", "value": round(s, 4), "threshold": 0.0, "direction": ">",
                            "contribution": round(weight * s, 4), "detail": detail})
        evidence[i].sort(key=lambda e: -(e.get("contribution") or 0.0))
    groups: dict[tuple[str, str], dict[str, int]] = {}
    damp = peer.local_damping(peer.local_counts(matches))
    for r in matches.to_pylist():
        # only specific values that few local accounts share tie accounts together
        if r["indicator_kind"] in STRONG_KINDS and damp[(r["indicator_kind"], r["indicator"])] >= 0.5:
            g = groups.setdefault((r["peer"], r["campaign"]), {})
            g[r["account_id"]] = g.get(r["account_id"], 0) + r["count"]
    src, dst, det, cnt = [], [], [], []
    for (p, c), accts in sorted(groups.items()):
        members = sorted(accts)
        # a star around the first member plus a chain keeps them connected without n^2 pairs
        pairs = {tuple(sorted((members[0], m))) for m in members[1:]}
        pairs |= {tuple(sorted(ab)) for ab in zip(members[1:], members[2:])}
        for a, b in sorted(pairs):
            src.append(a), dst.append(b), cnt.append(min(accts[a], accts[b]))
            det.append(f"both match peer {p!r} campaign {c}")
    edges = pa.table({"src": pa.array(src, pa.string()), "dst": pa.array(dst, pa.string()),
                      "kind": pa.array(["peer_intel"] * len(src), pa.string()),
                      "weight": pa.array([0.8] * len(src), pa.float64()), "count": pa.array(cnt, pa.int64()),
                      "detail": pa.array(det, pa.string())}, schema=EDGE_SCHEMA)
    return raw, matches, edges
