"""find_campaigns: Leiden communities, scoring from member evidence, propagation and explanations."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest
from linking_fixtures import world_edges

from distillguard.linking import LinkConfig, find_campaigns


@pytest.fixture(scope="module")
def linked():
    w, _, _, edges = world_edges()
    return w, edges, find_campaigns(edges, w.score_table())


def _groups(w, rec):
    return Counter(w.truth[a] for a in rec["accounts"])


def test_both_campaigns_recovered_and_pure(linked):
    w, _, res = linked
    recs = res.campaign_records()
    best = {}
    for rec in recs:
        g = _groups(w, rec)
        top, n = g.most_common(1)[0]
        assert n / rec["n_accounts"] >= 0.8
        best[top] = max(best.get(top, 0), n)
    assert best.get("hydra", 0) >= 45
    assert best.get("slow", 0) >= 27
    assert "benign" not in best


def test_no_benign_account_in_any_campaign(linked):
    w, _, res = linked
    swept = [a for a in res.membership["account_id"].to_pylist() if w.truth[a] == "benign"]
    assert swept == []


def test_weak_members_are_raised(linked):
    w, _, res = linked
    sc = dict(zip(res.account_scores["account_id"].to_pylist(), res.account_scores["score"].to_pylist()))
    own = dict(zip(res.account_scores["account_id"].to_pylist(), res.account_scores["own_score"].to_pylist()))
    weak = [f"hydra-{i:02d}" for i in range(10)]
    assert all(own[a] == pytest.approx(0.1) for a in weak)
    assert min(sc[a] for a in weak) >= 0.6
    # benign accounts keep their own score
    assert all(sc[a] == own[a] for a in sc if w.truth[a] == "benign")


def test_edge_summaries_match_edges(linked):
    w, edges, res = linked
    members = {}
    for a, c in zip(res.membership["account_id"].to_pylist(), res.membership["campaign_id"].to_pylist()):
        members[a] = c
    expect = Counter()
    for s, d, k in zip(edges["src"].to_pylist(), edges["dst"].to_pylist(), edges["kind"].to_pylist()):
        if s in members and members[s] == members.get(d):
            expect[(members[s], k)] += 1
    for rec in res.campaign_records():
        got = {e["kind"]: e for e in rec["edges"]}
        for (cid, k), n in expect.items():
            if cid == rec["campaign_id"]:
                assert got[k]["pairs"] == n
                assert 2 <= got[k]["accounts"] <= rec["n_accounts"]
        if _groups(w, rec).most_common(1)[0][0] == "hydra":
            assert "hcard-" in got["payment"]["detail"]
        else:
            assert "partition" in got


def test_scores_come_from_evidence_not_structure(linked):
    w, edges, _ = linked
    zero = pa.table({"account_id": sorted(w.truth), "score": [0.0] * len(w.truth)})
    res = find_campaigns(edges, zero)
    assert res.campaigns.num_rows >= 2
    assert max(res.campaigns["score"].to_pylist()) == 0.0
    assert max(res.account_scores["score"].to_pylist()) == 0.0


def test_ids_deterministic_and_ordered(linked):
    w, edges, res = linked
    again = find_campaigns(edges, w.score_table())
    assert again.membership.equals(res.membership)
    scores = res.campaigns["score"].to_pylist()
    assert scores == sorted(scores, reverse=True)
    assert res.campaigns["campaign_id"].to_pylist() == [f"C{i:04d}" for i in range(1, len(scores) + 1)]


def test_min_size_and_empty_inputs(linked):
    w, edges, _ = linked
    res = find_campaigns(edges, w.score_table(), config=LinkConfig(min_campaign_size=40))
    assert res.campaigns["n_accounts"].to_pylist() == [50] or min(res.campaigns["n_accounts"].to_pylist()) >= 40
    empty = find_campaigns(edges.slice(0, 0), None)
    assert empty.campaigns.num_rows == 0 and empty.membership.num_rows == 0
    with pytest.raises(ValueError, match="score"):
        find_campaigns(edges, pa.table({"account_id": ["x"], "score": [1.5]}))
    with pytest.raises(ValueError, match="weight"):
        find_campaigns(edges.drop_columns(["weight"]), None)


def test_detail_values_equal_the_regex_capture_on_odd_details():
    import pyarrow as pa
    import pyarrow.compute as pc

    from distillguard.linking.campaigns import _VALUE_RE, _detail_values

    details = [
        "ip 10.0.0.1 (3 customers)", "ip 10.0.0.1 (3 customers); 2 shared values in 4 shared 3600s windows",
        "user_agent Mozilla/5.0 (X11; Linux) (12 customers)", "ip  spaced (4 customers)", "ip\ttab (4 customers)",
        "asn AS1 (5 customers) and AS2 (6 customers)", "asn x (7 customers) tail (8 customers)",
        "ua new\nline (2 customers)", "ua ünïcødé 値 (9 customers)", "payment pf_1 (customers)",
        "payment pf_1 ( 3 customers)", "payment pf_1(3 customers)", "ip  (3 customers)", "ip (3 customers)",
        "partition gsm8k: 3+4 of 100 items, 0 shared", "", None, "sync co-active in ~5 of 9/9 60s buckets",
        " leading (3 customers)", "x y (0123 customers)", "(1 customers)", "k v (1 customers)\n(2 customers)",
    ] * 3
    arr = pa.array(details, pa.string())
    pattern = _VALUE_RE.pattern.replace("(", "(?P<v>", 1).replace(r"((\d+)", r"((?P<n>\d+)", 1)
    want = pc.struct_field(pc.extract_regex(arr, pattern), "v")
    for chunk in (4, 7, 1000):
        got = _detail_values(arr, chunk=chunk)
        assert got.to_pylist() == want.to_pylist()
    assert _detail_values(pa.array([], pa.string())).to_pylist() == []
    assert _detail_values(arr.slice(5, 9)).to_pylist() == want.slice(5, 9).to_pylist()
