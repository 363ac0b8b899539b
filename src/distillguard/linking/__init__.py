"""Campaign linking: a typed, weighted account graph and Leiden communities scored from member evidence.

``build_edges(events, signals)`` -> edges table; ``find_campaigns(edges, account_scores)`` ->
:class:`CampaignResult`. Settings and every hub guard: :class:`LinkConfig`, docs/linking.md.
"""

from .config import ALL_KINDS, CONTEXT_KINDS, KindConfig, LinkConfig
from .edges import EDGE_SCHEMA, build_edges

__all__ = ["ALL_KINDS", "CONTEXT_KINDS", "EDGE_SCHEMA", "KindConfig", "LinkConfig", "build_edges"]
from .campaigns import CampaignResult, find_campaigns  # noqa: E402

__all__ += ["CampaignResult", "find_campaigns"]
