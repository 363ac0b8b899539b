"""Stand-in for ``distillguard.linking.find_campaigns`` while that function is not installed.

Connected components of the edge graph (two or more accounts); the real linking stage (Leiden communities
scored from member evidence) replaces it automatically as soon as it imports.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["find_campaigns"]


def find_campaigns(edges: pa.Table, account_scores=None, *, config=None) -> pa.Table:
    """``account_id, campaign_id`` for every account in a connected component of two or more."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(edges.column("src").to_pylist(), edges.column("dst").to_pylist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for a in parent:
        groups.setdefault(root(a), []).append(a)
    ordered = sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
    rows = [{"account_id": a, "campaign_id": f"C{i + 1:04d}"} for i, members in enumerate(ordered) for a in members]
    return pa.Table.from_pylist(rows, schema=pa.schema([("account_id", pa.string()), ("campaign_id", pa.string())]))
