"""Campaigns: Leiden communities of the account graph, scored from member evidence.

Pipeline: combine a pair's edges of every kind into one weight (context kinds capped so infrastructure
alone never links a campaign), keep pairs above ``min_link_weight``, run Leiden (modularity with a
resolution parameter, fixed seed), drop communities under ``min_campaign_size``, then score:

- member ``strength`` = 1 - exp(-sum of its link weights inside the campaign): one 0.3 link gives 0.26,
  ten strong links give ~1;
- ``evidence`` = mean of the member scores at or above the ``evidence_quantile`` quantile (robust to a
  hydra cluster's resold benign traffic and to weak members);
- ``cohesion`` = mean member strength;
- campaign ``score`` = 1 - (1 - evidence) ** (1 + cohesion): cohesion amplifies evidence, never creates it;
- each member's propagated score = max(own score, campaign score x strength), so weak members of a
  strong campaign are raised through their links to the strong ones.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import CONTEXT_KINDS, LinkConfig

__all__ = ["CampaignResult", "find_campaigns", "EDGE_SUMMARY_TYPE"]

EDGE_SUMMARY_TYPE = pa.list_(pa.struct([("kind", pa.string()), ("pairs", pa.int64()), ("accounts", pa.int64()),
                                        ("weight", pa.float64()), ("detail", pa.string())]))
_VALUE_RE = re.compile(r"^\S+ (.*) \((\d+) customers\)")


@dataclass
class CampaignResult:
    """``membership``: account_id, campaign_id, strength. ``campaigns``: campaign_id, score, n_accounts,
    evidence, cohesion, edges (list of {kind, pairs, accounts, weight, detail}). ``account_scores``:
    account_id, own_score, score (propagated), campaign_id (null outside campaigns)."""

    membership: pa.Table
    campaigns: pa.Table
    account_scores: pa.Table

    def campaign_records(self) -> list[dict]:
        """Campaigns as plain dicts (``accounts`` sorted by strength), ready for campaigns.json."""
        members: dict[str, list[tuple[float, str]]] = {}
        for a, c, s in zip(self.membership["account_id"].to_pylist(), self.membership["campaign_id"].to_pylist(),
                           self.membership["strength"].to_pylist()):
            members.setdefault(c, []).append((-s, a))
        out = []
        for row in self.campaigns.to_pylist():
            row["accounts"] = [a for _, a in sorted(members.get(row["campaign_id"], []))]
            out.append(row)
        return out


def _codes(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``(distinct values sorted, index of each value among them)``: ``np.unique(..., return_inverse=True)``
    without Python objects."""
    uniq = pc.unique(values)
    uniq = uniq.take(pc.sort_indices(uniq))
    return uniq, pc.index_in(values, value_set=uniq).to_numpy(zero_copy_only=False).astype(np.int64)


def _combine(a: np.ndarray, b: np.ndarray, w: np.ndarray, ctx: np.ndarray, n: int, cfg: LinkConfig):
    """Per unordered pair (``a < b`` account codes): combined weight (noisy-OR, context kinds capped at
    ``context_cap``). Returns ``(pair a, pair b, weight)``."""
    w = np.clip(w.astype(np.float64), 0.0, 0.999999)
    key = a * n + b
    ukey, pinv = np.unique(key, return_inverse=True)
    logc = np.bincount(pinv, weights=np.where(ctx, np.log1p(-w), 0.0), minlength=len(ukey))
    logi = np.bincount(pinv, weights=np.where(ctx, 0.0, np.log1p(-w)), minlength=len(ukey))
    wc = np.minimum(1.0 - np.exp(logc), cfg.context_cap)
    total = 1.0 - (1.0 - wc) * np.exp(logi)
    return ukey // n, ukey % n, total


def _leiden(n: int, pa_: np.ndarray, pb_: np.ndarray, w: np.ndarray, cfg: LinkConfig) -> np.ndarray:
    import igraph as ig
    import leidenalg

    g = ig.Graph(n=n, edges=np.column_stack((pa_, pb_)), directed=False)
    g.es["weight"] = w.tolist()
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights="weight",
                                    resolution_parameter=cfg.resolution, n_iterations=cfg.leiden_iterations,
                                    seed=cfg.seed)
    return np.asarray(part.membership, dtype=np.int64)


def _summary(kind: str, weights: np.ndarray, values: pa.Array, details: pa.Array, accounts: int) -> dict:
    """One kind's edges inside one campaign (in edge order): ``values`` = the shared value named in each
    detail (null where the detail names none)."""
    pairs = len(weights)
    weight = float(np.mean(weights))
    vc = pc.value_counts(values.drop_null()) if values.null_count < len(values) else None
    if vc is not None and len(vc):
        # most frequent first, ties in order of first appearance (as Counter.most_common)
        counts = vc.field("counts").to_numpy(zero_copy_only=False)
        names = vc.field("values")
        top_i = np.argsort(-counts, kind="stable")[:3]
        top = ", ".join(f"{names[int(i)].as_py()} ({int(counts[i])} pairs)" for i in top_i)
        detail = f"shared {kind}: {top}" + (f" and {len(vc) - 3} more values" if len(vc) > 3 else "")
    else:
        detail = f"strongest: {max(zip(weights.tolist(), details.to_pylist()))[1]}"
    return {"kind": kind, "pairs": pairs, "accounts": accounts, "weight": round(weight, 4), "detail": detail}


def _detail_values(details: pa.Array, chunk: int = 100_000) -> pa.Array:
    """The value each detail names, exactly as the first group of :data:`_VALUE_RE` (null where it does not
    match). Details holding " customers)" once (all that build_edges writes) are cut with byte arithmetic:
    the value runs from after the first space to the " (<digits> customers)" that follows it; any other
    matching detail goes through the regex's capture, which is several times slower."""
    details = details.cast(pa.large_string())
    parts = [_detail_values_part(details.slice(lo, chunk)) for lo in range(0, len(details), chunk)]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def _detail_values_part(details: pa.Array) -> pa.Array:
    n = len(details)
    matched = pc.fill_null(pc.match_substring_regex(details, _VALUE_RE.pattern), False)
    simple = pc.and_(matched, pc.equal(pc.count_substring(details, " customers)"), 1))
    simple = pc.fill_null(simple, False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(simple)
    lo = np.zeros(n, np.int64)
    length = np.zeros(n, np.int64)
    data = np.zeros(0, np.uint8)
    if len(rows):
        buf = np.frombuffer(details.buffers()[2], np.uint8)
        offs = np.frombuffer(details.buffers()[1], np.int64)[details.offset:details.offset + n + 1]
        sub = details.take(pa.array(rows))
        start = offs[rows]
        space = start + pc.find_substring(sub, " ").to_numpy(zero_copy_only=False).astype(np.int64)
        end = start + pc.find_substring(sub, " customers)").to_numpy(zero_copy_only=False).astype(np.int64)
        # back over the digits (at least one: the match guarantees it) to "(", which follows a space
        p = end - 1
        digit = (buf[p] >= 48) & (buf[p] <= 57)
        while digit.any():
            p = np.where(digit, p - 1, p)
            digit &= (buf[p] >= 48) & (buf[p] <= 57)
        lo[rows] = space + 1
        length[rows] = (p - 1) - (space + 1)
        total = int(length.sum())
        first = np.cumsum(length) - length  # where each value starts in the new data
        data = buf[np.repeat(lo - first, length) + np.arange(total)] if total else data
    offsets = np.concatenate(([0], np.cumsum(length))).astype(np.int32)
    out = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()),
                                      pa.py_buffer(np.packbits(simple, bitorder="little").tobytes()))
    other = pc.and_(matched, pc.invert(pa.array(simple)))
    if pc.any(other).as_py():
        rest = np.flatnonzero(other.to_numpy(zero_copy_only=False))
        pattern = _VALUE_RE.pattern.replace("(", "(?P<v>", 1).replace(r"((\d+)", r"((?P<n>\d+)", 1)
        slow = pc.struct_field(pc.extract_regex(details.take(pa.array(rest)), pattern), "v")
        mask = np.zeros(n, bool)
        mask[rest] = True
        out = pc.replace_with_mask(out, pa.array(mask), slow.cast(pa.string()))
    return out


def _edge_summaries(campaign_rows: list[dict], edges: pa.Table, order: np.ndarray, kcode: np.ndarray,
                    ea: np.ndarray, eb: np.ndarray, ew: np.ndarray, memb: np.ndarray, rank_of_comm: np.ndarray,
                    all_values=None) -> None:
    """Explainable edge summaries: every original edge inside a campaign, by kind, into ``row["edges"]``
    (edges in (src, dst, kind) order; texts stay in Arrow, only the few summary values become Python).
    ``all_values``: a future of :func:`_detail_values` over every edge's detail, in table order (worked out
    while the communities are found), else the values are worked out here for the edges inside campaigns."""
    rank = np.where(memb[ea] == memb[eb], rank_of_comm[memb[ea]], 0)
    sel = np.flatnonzero(rank > 0)
    if not len(sel):
        for row in campaign_rows:
            row["edges"] = []
        return
    rows_in = pa.array(order[sel])
    kinds = edges["kind"].take(rows_in).combine_chunks()
    if "detail" in edges.column_names:
        details = edges["detail"].take(rows_in).combine_chunks().cast(pa.string())
    else:
        details = pa.array([""] * len(sel), pa.string())
    # the value a shared-value detail names: "<kind> <value> (<n> customers)..." (_VALUE_RE)
    if all_values is not None and "detail" in edges.column_names:
        values = all_values.result().take(rows_in)
    else:
        values = _detail_values(details)
    # group (campaign, kind), keeping edge order inside each group
    ksel = kcode[order][sel]
    grp = np.lexsort((ksel, rank[sel]))
    gkey = rank[sel][grp] * (int(kcode.max()) + 1) + ksel[grp]
    starts = np.flatnonzero(np.concatenate(([True], gkey[1:] != gkey[:-1])))
    bounds = np.append(starts, len(grp))
    per: dict[int, list[dict]] = {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = np.sort(grp[lo:hi])  # positions in sel, in edge order
        take = pa.array(part)
        accounts = len(np.unique(np.concatenate((ea[sel[part]], eb[sel[part]]))))
        per.setdefault(int(rank[sel[part[0]]]), []).append(
            _summary(kinds[int(part[0])].as_py(), ew[sel[part]], values.take(take), details.take(take), accounts))
    for r, row in enumerate(campaign_rows, 1):
        row["edges"] = sorted(per.get(r, []), key=lambda s: (-s["pairs"] * s["weight"], s["kind"]))


def find_campaigns(edges: pa.Table, account_scores: pa.Table | None = None, *,
                   config: LinkConfig | None = None) -> CampaignResult:
    """Leiden communities of the account graph in ``edges`` scored from ``account_scores``
    (``account_id, score`` in [0, 1]; accounts missing there count as 0)."""
    cfg = config or LinkConfig()
    for col in ("src", "dst", "kind", "weight"):
        if col not in edges.column_names:
            raise ValueError(f"find_campaigns: edges table lacks column {col!r}")
    own: dict[str, float] = {}
    if account_scores is not None:
        for col in ("account_id", "score"):
            if col not in account_scores.column_names:
                raise ValueError(f"find_campaigns: account_scores lacks column {col!r}")
        sc = pc.fill_null(account_scores["score"], 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        if len(sc) and (np.isnan(sc).any() or sc.min() < 0 or sc.max() > 1):
            raise ValueError("find_campaigns: account_scores.score must be in [0, 1]")
        own = dict(zip(account_scores["account_id"].to_pylist(), sc.tolist()))

    membership_rows: list[tuple[str, str, float]] = []
    campaign_rows: list[dict] = []
    camp_of: dict[str, str] = {}
    prop: dict[str, float] = {}
    helper = None
    try:
        if edges.num_rows:
            all_values = None
            if "detail" in edges.column_names:
                # the summaries' detail values (Arrow kernels, the GIL released) are worked out for every edge on
                # a helper thread while the graph is built and its communities found (most edges end up inside
                # a campaign: 529k of 700k at 1M events)
                helper = ThreadPoolExecutor(1, thread_name_prefix="distillguard-details")
                all_values = helper.submit(_detail_values, edges["detail"].combine_chunks())
            # accounts as codes in id order; edges in (src, dst, kind) order, so sums run in a fixed order
            m = edges.num_rows
            names_arr, codes = _codes(pa.concat_arrays([edges["src"].combine_chunks().cast(pa.string()),
                                                        edges["dst"].combine_chunks().cast(pa.string())]))
            cs, cd = codes[:m], codes[m:]
            kind_arr = edges["kind"].combine_chunks().cast(pa.string())
            _, kcode = _codes(kind_arr)
            order = np.lexsort((kcode, cd, cs))
            cs, cd = cs[order], cd[order]
            ea, eb = np.minimum(cs, cd), np.maximum(cs, cd)
            ew = edges["weight"].to_numpy(zero_copy_only=False).astype(np.float64)[order]
            ctx = pc.is_in(kind_arr, value_set=pa.array(list(CONTEXT_KINDS), pa.string())).to_numpy(
                zero_copy_only=False)[order]
            names = np.asarray(names_arr.to_pylist(), dtype=object)
            pa_, pb_, total = _combine(ea, eb, ew, ctx, len(names), cfg)
            keep = total >= cfg.min_link_weight
            pa_, pb_, total = pa_[keep], pb_[keep], total[keep]
            memb = _leiden(len(names), pa_, pb_, total, cfg) if len(pa_) else np.arange(len(names))
            inside = memb[pa_] == memb[pb_]
            s_int = (np.bincount(pa_[inside], weights=total[inside], minlength=len(names))
                     + np.bincount(pb_[inside], weights=total[inside], minlength=len(names)))
            strength = 1.0 - np.exp(-s_int)
            sizes = np.bincount(memb)
            drafts = []
            for c in np.flatnonzero(sizes >= cfg.min_campaign_size):
                idx = np.flatnonzero(memb == c)
                scores = np.array([own.get(names[i], 0.0) for i in idx])
                q = np.quantile(scores, cfg.evidence_quantile)
                evidence = float(scores[scores >= q].mean())
                cohesion = float(strength[idx].mean())
                score = 1.0 - (1.0 - evidence) ** (1.0 + cohesion)
                drafts.append((-score, -len(idx), names[idx].min(), idx, evidence, cohesion, score, c))
            drafts.sort(key=lambda d: d[:3])
            rank_of_comm = np.zeros(len(sizes), dtype=np.int64)  # 0: no campaign
            for rank, (_, _, _, idx, evidence, cohesion, score, c) in enumerate(drafts, 1):
                cid = f"C{rank:04d}"
                rank_of_comm[c] = rank
                for i in idx:
                    name = names[i]
                    camp_of[name] = cid
                    membership_rows.append((name, cid, float(strength[i])))
                    prop[name] = max(own.get(name, 0.0), score * float(strength[i]))
                campaign_rows.append({"campaign_id": cid, "score": round(score, 6), "n_accounts": len(idx),
                                      "evidence": round(evidence, 6), "cohesion": round(cohesion, 6)})
            _edge_summaries(campaign_rows, edges, order, kcode, ea, eb, ew, memb, rank_of_comm, all_values)
    finally:
        if helper is not None:
            helper.shutdown(wait=True, cancel_futures=True)

    membership = pa.table({"account_id": pa.array([r[0] for r in membership_rows], pa.string()),
                           "campaign_id": pa.array([r[1] for r in membership_rows], pa.string()),
                           "strength": pa.array([r[2] for r in membership_rows], pa.float64())})
    campaigns = pa.Table.from_pylist(campaign_rows, schema=pa.schema([
        ("campaign_id", pa.string()), ("score", pa.float64()), ("n_accounts", pa.int64()),
        ("evidence", pa.float64()), ("cohesion", pa.float64()), ("edges", EDGE_SUMMARY_TYPE)]))
    ids = sorted(set(own) | set(camp_of))
    account_table = pa.table({
        "account_id": pa.array(ids, pa.string()),
        "own_score": pa.array([own.get(a, 0.0) for a in ids], pa.float64()),
        "score": pa.array([prop.get(a, own.get(a, 0.0)) for a in ids], pa.float64()),
        "campaign_id": pa.array([camp_of.get(a) for a in ids], pa.string()),
    })
    return CampaignResult(membership=membership, campaigns=campaigns, account_scores=account_table)
