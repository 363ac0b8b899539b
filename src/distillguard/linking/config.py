"""Settings for campaign linking: one :class:`KindConfig` per edge kind plus graph and scoring knobs.

Every guard against benign hubs is a number here; docs/linking.md explains each one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = ["KindConfig", "LinkConfig", "SHARED_VALUE_KINDS", "CONTEXT_KINDS", "ALL_KINDS"]

#: kinds built by "accounts sharing a value" (optionally within a time bucket)
SHARED_VALUE_KINDS = ("payment", "ip", "ip24", "asn", "user_agent", "created_burst", "template", "system_prompt")
#: kinds that describe where/how traffic arrives rather than who runs it; alone they never form a campaign
CONTEXT_KINDS = ("ip24", "asn", "user_agent", "created_burst")
ALL_KINDS = SHARED_VALUE_KINDS + ("template_set", "sync", "partition", "peer_intel")


@dataclass(frozen=True)
class KindConfig:
    """How one shared-value kind turns shared values into weighted pair edges.

    A value (within its time bucket, if ``bucket_s`` is set) shared by ``n`` distinct customers (an
    org counts once) gives ``h = min(1, hub_soft / n)`` (inverse frequency) to every pair it links;
    values with ``n > hub_max`` are dropped as hubs. Each distinct value counts once per pair (its
    highest ``h`` over time buckets), so a pair's weight is ``base * (1 - exp(-sum(h) / saturation))``
    summed over the distinct values the pair shares.
    """

    enabled: bool = True
    base: float = 0.5
    saturation: float = 1.0
    hub_soft: int = 10
    hub_max: int = 1000
    bucket_s: int | None = None
    #: most one distinct value can add to ``sum(h)``: below 1 a pair needs several distinct shared values
    #: (a proxy pool's many IPs) before the kind weighs much, while one campus NAT IP stays weak
    value_cap: float = 1.0

    def check(self, kind: str) -> None:
        if not 0.0 < self.base <= 1.0:
            raise ValueError(f"linking.{kind}.base must be in (0, 1], got {self.base}")
        if self.saturation <= 0:
            raise ValueError(f"linking.{kind}.saturation must be > 0, got {self.saturation}")
        if self.hub_soft < 1 or self.hub_max < 2:
            raise ValueError(f"linking.{kind}: hub_soft must be >= 1 and hub_max >= 2")
        if not 0.0 < self.value_cap <= 1.0:
            raise ValueError(f"linking.{kind}.value_cap must be in (0, 1], got {self.value_cap}")
        if self.bucket_s is not None and self.bucket_s <= 0:
            raise ValueError(f"linking.{kind}.bucket_s must be > 0, got {self.bucket_s}")


def _default_kinds() -> dict[str, KindConfig]:
    return {
        "payment": KindConfig(base=0.9, saturation=0.35, hub_soft=50, hub_max=5000),
        "ip": KindConfig(base=0.6, saturation=3.0, hub_soft=8, hub_max=200, bucket_s=3600, value_cap=0.35),
        "ip24": KindConfig(base=0.25, saturation=2.0, hub_soft=8, hub_max=300, bucket_s=3600),
        "asn": KindConfig(base=0.15, saturation=3.0, hub_soft=8, hub_max=100, bucket_s=600),
        "user_agent": KindConfig(base=0.3, saturation=1.0, hub_soft=5, hub_max=300),
        # for creation bursts the group size is the signal: no soft down-weighting below hub_max
        "created_burst": KindConfig(base=0.35, saturation=0.5, hub_soft=5000, hub_max=5000, bucket_s=600),
        "template": KindConfig(base=0.4, saturation=2.0, hub_soft=3, hub_max=20000),
        "system_prompt": KindConfig(base=0.6, saturation=0.5, hub_soft=5, hub_max=20000),
    }


@dataclass(frozen=True)
class LinkConfig:
    """All linking settings. Build from a mapping with :meth:`from_dict` (unknown keys are an error)."""

    kinds: dict[str, KindConfig] = field(default_factory=_default_kinds)
    #: in a group of more than k+1 accounts each member links to k others (offsets 1, 2, 4, ... in a
    #: hash order, so the group stays connected with O(n*k) edges instead of a clique)
    k_neighbors: int = 8
    #: created_burst: a creation bucket is a burst when it holds >= burst_min accounts and
    #: >= burst_factor times the mean accounts per bucket
    burst_min: int = 5
    burst_factor: float = 10.0
    #: SimHash near-duplicate templates: signatures within this Hamming distance share a cluster
    simhash_max_distance: int = 3
    simhash_blocks: int = 5
    #: MinHash / LSH (template_set and sync)
    minhash_perm: int = 64
    lsh_bands: int = 16
    seed: int = 7
    #: template edges count a template for an account only when it used it at least this often (the
    #: repetition campaigns show; one-off use of a common prompt shape says nothing)
    template_min_uses: int = 2
    #: template_set: accounts need >= this many distinct template clusters; clusters used by more than
    #: set_hub_max customers are left out of the sets (too common to say anything)
    set_min_templates: int = 3
    set_hub_max: int = 50
    set_min_jaccard: float = 0.5
    set_base: float = 0.8
    #: sync: active time buckets per account; pairs need Jaccard >= sync_min_jaccard AND co-activity
    #: >= sync_min_lift times what independent accounts with those activity levels would show
    sync_bucket_s: int = 60
    sync_min_buckets: int = 10
    sync_min_jaccard: float = 0.3
    sync_min_lift: float = 5.0
    sync_base: float = 0.6
    #: partition: per (benchmark, period) item sets; accounts need >= partition_min_items items and are
    #: compared with their partition_neighbors next accounts in order of first use. A pair is disjoint
    #: when it shares <= partition_max_overlap * max(1, a*b/N) items (N = items seen in that set and
    #: period); an edge needs both ends to have disjoint neighbours whose summed expected overlap is
    #: >= partition_min_expected (chance of that many random slices all missing: exp(-value))
    partition_period_s: int = 7 * 86400
    partition_min_items: int = 5
    partition_min_expected: float = 3.0
    partition_max_overlap: float = 0.1
    partition_neighbors: int = 16
    #: slices of one partition are of similar size: pairs whose item counts differ by more than this
    #: factor (a full benchmark run next to a slice) are not compared
    partition_max_size_ratio: float = 4.0
    partition_base: float = 0.45
    #: weight factor for a partition pair that shares no repeated template cluster (different
    #: operators can sample disjoint items too; one pipeline sends its slices through one template)
    partition_untemplated: float = 0.3
    #: edges below this weight are not returned
    min_edge_weight: float = 0.05
    # --- find_campaigns ---
    #: context kinds (ip, ip24, asn, user_agent, created_burst) together add at most this to a pair
    context_cap: float = 0.1
    #: pairs whose combined weight is below this are left out of the graph
    min_link_weight: float = 0.4
    #: Leiden modularity resolution (RBConfiguration). Lower values merge more: 0.2 keeps a campaign with
    #: strong sub-groups (one card per ten accounts) whole, but also merges campaigns bridged by
    #: partition edges; 1.0 splits such campaigns into pure sub-campaigns instead
    resolution: float = 1.0
    min_campaign_size: int = 5
    leiden_iterations: int = -1
    #: member evidence: mean of the member scores at or above this quantile
    evidence_quantile: float = 0.5

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(SHARED_VALUE_KINDS)
        if unknown:
            raise ValueError(f"linking.kinds: unknown kind(s) {sorted(unknown)}; known: {SHARED_VALUE_KINDS}")
        for kind, kc in self.kinds.items():
            kc.check(kind)
        if self.k_neighbors < 1 or self.partition_neighbors < 1:
            raise ValueError("linking.k_neighbors and partition_neighbors must be >= 1")
        if not 0 <= self.simhash_max_distance < self.simhash_blocks <= 64:
            raise ValueError("linking: need 0 <= simhash_max_distance < simhash_blocks <= 64")
        if self.minhash_perm % self.lsh_bands:
            raise ValueError("linking.minhash_perm must be a multiple of lsh_bands")
        for name in ("set_min_jaccard", "sync_min_jaccard", "context_cap", "min_link_weight", "evidence_quantile",
                     "partition_max_overlap", "partition_untemplated", "set_base", "sync_base", "partition_base"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"linking.{name} must be in [0, 1], got {v}")
        if self.min_campaign_size < 2:
            raise ValueError("linking.min_campaign_size must be >= 2")

    def kind(self, name: str) -> KindConfig:
        return self.kinds.get(name) or _default_kinds()[name]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "LinkConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        bad = set(data) - known
        if bad:
            raise ValueError(f"linking: unknown setting(s) {sorted(bad)}")
        kinds = _default_kinds()
        for kind, over in (data.pop("kinds", None) or {}).items():
            if kind not in kinds:
                raise ValueError(f"linking.kinds: unknown kind {kind!r}; known: {SHARED_VALUE_KINDS}")
            kfields = {f.name for f in fields(KindConfig)}
            if not isinstance(over, dict) or set(over) - kfields:
                raise ValueError(f"linking.kinds.{kind}: expected a mapping of {sorted(kfields)}")
            kinds[kind] = replace(kinds[kind], **over)
        return cls(kinds=kinds, **data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
