"""Benchmark metrics: pure functions over per-account arrays and per-request arrays.

Every function takes plain sequences (lists, numpy arrays, pyarrow/pandas columns converted with
``numpy.asarray``) and returns numbers or dicts, so each can be checked against a hand-computed case.

Conventions: ``is_attack`` is a boolean per account (True for attack/harvesting accounts); ``flagged`` is a
boolean per account; ``groups`` is the scenario group (persona) of each account.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "flag_share_by_group",
    "false_positive_rate",
    "fpr_by_group",
    "recall",
    "campaign_recall",
    "campaign_linking",
    "average_precision",
    "calibrate_threshold",
    "served_before",
    "replay_cut_times",
    "replay_first_flag",
    "detection_delay",
]


def _bool(a) -> np.ndarray:
    return np.asarray(a, dtype=bool)


def _check_len(*arrays) -> None:
    n = {len(a) for a in arrays}
    if len(n) > 1:
        raise ValueError(f"arrays of different lengths: {sorted(n)}")


def flag_share_by_group(groups: Sequence[Hashable], flagged: Sequence[bool]) -> dict:
    """Share of accounts flagged in each group: ``{group: flagged / accounts}``, groups in sorted order."""
    _check_len(groups, flagged)
    total: dict = defaultdict(int)
    hits: dict = defaultdict(int)
    for g, f in zip(groups, _bool(flagged)):
        total[g] += 1
        hits[g] += int(f)
    return {g: hits[g] / total[g] for g in sorted(total, key=str)}


def false_positive_rate(is_attack: Sequence[bool], flagged: Sequence[bool]) -> float:
    """Flagged benign accounts / benign accounts (NaN when there is no benign account)."""
    _check_len(is_attack, flagged)
    benign = ~_bool(is_attack)
    n = int(benign.sum())
    return float(_bool(flagged)[benign].sum() / n) if n else math.nan


def fpr_by_group(groups: Sequence[Hashable], is_attack: Sequence[bool], flagged: Sequence[bool]) -> dict:
    """False-positive rate within each group that holds benign accounts (attack accounts ignored)."""
    _check_len(groups, is_attack, flagged)
    benign = ~_bool(is_attack)
    g = np.asarray(groups, dtype=object)[benign]
    return flag_share_by_group(list(g), _bool(flagged)[benign])


def recall(is_attack: Sequence[bool], flagged: Sequence[bool]) -> float:
    """Flagged attack accounts / attack accounts (NaN when there is no attack account)."""
    _check_len(is_attack, flagged)
    pos = _bool(is_attack)
    n = int(pos.sum())
    return float(_bool(flagged)[pos].sum() / n) if n else math.nan


def campaign_recall(campaign_of: Sequence[Hashable | None], flagged: Sequence[bool],
                    min_share: float = 0.5) -> tuple[float, dict]:
    """Share of campaigns recovered; a campaign counts when at least ``min_share`` of its accounts are flagged.

    ``campaign_of`` gives each account's true campaign id (None/"" for accounts outside any campaign).
    Returns ``(recall, {campaign_id: share of its accounts flagged})``; recall is NaN without campaigns.
    """
    _check_len(campaign_of, flagged)
    shares = flag_share_by_group(
        [c for c in campaign_of if c not in (None, "")],
        [f for c, f in zip(campaign_of, _bool(flagged)) if c not in (None, "")],
    )
    if not shares:
        return math.nan, {}
    hit = sum(1 for s in shares.values() if s >= min_share - 1e-12)
    return hit / len(shares), shares


def campaign_linking(campaign_of: Sequence[Hashable | None], linked_as: Sequence[Hashable | None]) -> dict:
    """How the detector's linked campaigns match the true ones (the account-level figures cannot show a
    campaign split into pieces, or two operations merged into one).

    ``campaign_of``: each account's true campaign (None/"" outside any); ``linked_as``: the campaign id the
    detector gave it (None/"" when none). Returns:

    * ``completeness``: per true campaign, the share of its accounts that sit in its single largest linked
      campaign (accounts left unlinked count against it); ``completeness_mean`` over campaigns;
    * ``purity_mean``: over linked campaigns holding any campaign account, the share of members from their
      largest true group (accounts outside campaigns form one group), weighted by size;
    * ``mixed``: linked campaigns holding accounts of two or more true campaigns.

    Values are NaN (and ``mixed`` 0) when there are no true campaigns.
    """
    _check_len(campaign_of, linked_as)
    true_c = [None if c in (None, "") else c for c in campaign_of]
    pred_c = [None if c in (None, "") else c for c in linked_as]
    members: dict = {}
    for t, p in zip(true_c, pred_c):
        if t is not None:
            members.setdefault(t, []).append(p)
    completeness = {}
    for t, preds in members.items():
        counts: dict = {}
        for p in preds:
            if p is not None:
                counts[p] = counts.get(p, 0) + 1
        completeness[t] = (max(counts.values()) if counts else 0) / len(preds)
    groups: dict = {}
    for t, p in zip(true_c, pred_c):
        if p is not None:
            g = groups.setdefault(p, {})
            g[t] = g.get(t, 0) + 1
    touched = {p: g for p, g in groups.items() if any(t is not None for t in g)}
    size = sum(sum(g.values()) for g in touched.values())
    purity = (sum(max(g.values()) for g in touched.values()) / size) if size else math.nan
    mixed = sum(1 for g in touched.values() if sum(1 for t in g if t is not None) >= 2)
    return {
        "completeness": completeness,
        "completeness_mean": float(np.mean(list(completeness.values()))) if completeness else math.nan,
        "purity_mean": purity,
        "mixed": mixed,
    }


def average_precision(is_attack: Sequence[bool], score: Sequence[float]) -> float:
    """Average precision of the account score for the attack class (sklearn's step-wise definition).

    NaN scores count as the lowest score. NaN when there are no attack accounts or no benign accounts.
    """
    from sklearn.metrics import average_precision_score

    _check_len(is_attack, score)
    y = _bool(is_attack)
    if y.all() or not y.any():
        return math.nan
    s = np.asarray(score, dtype=float)
    s = np.where(np.isnan(s), -np.inf, s)
    s = np.where(np.isneginf(s), (s[np.isfinite(s)].min() - 1.0) if np.isfinite(s).any() else 0.0, s)
    return float(average_precision_score(y, s))


def calibrate_threshold(benign_scores: Sequence[float], target_fpr: float) -> float:
    """Threshold ``t`` such that flagging ``score > t`` flags at most ``target_fpr`` of ``benign_scores``.

    With ``n`` benign scores sorted from highest, ``k = floor(target_fpr * n)`` of them may exceed the
    threshold, so ``t`` is the ``(k+1)``-th highest score. NaN scores are ignored. Raises ValueError on an
    empty list or a target outside [0, 1).
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    s = np.asarray(benign_scores, dtype=float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        raise ValueError("no benign scores to calibrate on")
    desc = np.sort(s)[::-1]
    k = int(math.floor(target_fpr * desc.size + 1e-9))
    return float(desc[min(k, desc.size - 1)])


# --------------------------------------------------------------------------------------------------------
# detection delay (time-ordered replay)


def served_before(ts: Sequence, weights: Sequence[float] | None, cut) -> float:
    """Share of a campaign's requests (or of ``weights``, e.g. reasoning tokens) served at or before ``cut``.

    ``cut`` None means the campaign was never flagged: the whole campaign was served (1.0).
    """
    t = np.asarray(ts)
    if t.size == 0:
        return math.nan
    w = np.ones(t.size, dtype=float) if weights is None else np.nan_to_num(np.asarray(weights, dtype=float))
    if cut is None:
        return 1.0
    total = w.sum()
    if total <= 0:  # no tokens at all: fall back to request share
        w = np.ones(t.size, dtype=float)
        total = float(t.size)
    return float(w[t <= cut].sum() / total)


def replay_cut_times(ts: Sequence, campaign_of_request: Sequence[Hashable | None],
                     fractions: Iterable[float]) -> dict:
    """Cut points of a replay: for each campaign and fraction ``f``, the timestamp of the request at which
    ``f`` of the campaign's requests have been served (the ``ceil(f*n)``-th in time order).

    Returns ``{campaign_id: sorted list of distinct cut timestamps}``.
    """
    t = np.asarray(ts)
    c = np.asarray(campaign_of_request, dtype=object)
    _check_len(t, c)
    fr = sorted({float(f) for f in fractions})
    if any(not 0 < f <= 1 for f in fr):
        raise ValueError("replay fractions must be in (0, 1]")
    out: dict = {}
    for cid in sorted({x for x in c if x not in (None, "")}, key=str):
        times = np.sort(t[c == cid])
        n = times.size
        cuts = sorted({times[max(1, math.ceil(f * n - 1e-9)) - 1] for f in fr})
        out[cid] = cuts
    return out


def replay_first_flag(cuts_by_campaign: Mapping[Hashable, Sequence], flagged_campaigns_at: Callable,
                      max_scans: int | None = None) -> dict:
    """Walk the replay in time order and return ``{campaign_id: first cut at which it was flagged or None}``.

    ``flagged_campaigns_at(cut, pending)`` runs the detector on every request served at or before ``cut``
    and returns the set of campaign ids (among ``pending``) that have at least one flagged account. Cuts
    that only belong to campaigns already detected are skipped; ``max_scans`` caps detector runs (the
    remaining campaigns are then reported as flagged at the full-traffic run if that run is reached, else
    None).
    """
    first: dict = {cid: None for cid in cuts_by_campaign}
    owners: dict = defaultdict(set)
    for cid, cuts in cuts_by_campaign.items():
        for cut in cuts:
            owners[cut].add(cid)
    scans = 0
    for cut in sorted(owners):
        pending = {cid for cid in owners[cut] if first[cid] is None}
        if not pending:
            continue
        if max_scans is not None and scans >= max_scans:
            break
        scans += 1
        # every undetected campaign active so far can be caught at this cut, not only its owners
        still = {cid for cid, v in first.items() if v is None}
        for cid in flagged_campaigns_at(cut, still) & still:
            first[cid] = cut
    return first


def detection_delay(ts: Sequence, campaign_of_request: Sequence[Hashable | None],
                    first_flag: Mapping[Hashable, object],
                    reasoning_tokens: Sequence[float] | None = None) -> dict:
    """Per campaign: share of its requests and of its reasoning tokens served before its first flag.

    Returns ``{campaign_id: {"requests": share, "reasoning_tokens": share, "detected": bool}}``.
    """
    t = np.asarray(ts)
    c = np.asarray(campaign_of_request, dtype=object)
    rt = None if reasoning_tokens is None else np.asarray(reasoning_tokens, dtype=float)
    _check_len(t, c)
    out = {}
    for cid, cut in first_flag.items():
        m = c == cid
        out[cid] = {
            "requests": served_before(t[m], None, cut),
            "reasoning_tokens": served_before(t[m], None if rt is None else rt[m], cut),
            "detected": cut is not None,
        }
    return out
