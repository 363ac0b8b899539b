"""Threat-intel exchange and canary attribution.

- :mod:`distillguard.intel.stix`: findings -> STIX 2.1 bundle (keyed identifiers, MITRE ATLAS, TLP, MACs)
- :mod:`distillguard.intel.peer`: :class:`PeerIntel`, peers' bundles as a signal for scan and the gateway
- :mod:`distillguard.intel.taxii`: push to / pull from a TAXII 2.1 collection
- :mod:`distillguard.intel.canary`: per-account phrasing canaries and attribution of suspect text

Names are imported lazily so ``distillguard --help`` stays fast.
"""

from __future__ import annotations

import importlib

__all__ = ["PeerIntel", "PeerMatch", "SharingKey", "IntelError", "export_bundle", "validate_bundle",
           "PhrasingCanary", "attribute", "push", "pull"]

_WHERE = {"PeerIntel": "peer", "PeerMatch": "peer", "SharingKey": "stix", "IntelError": "stix",
          "export_bundle": "stix", "validate_bundle": "stix", "PhrasingCanary": "canary", "attribute": "canary",
          "push": "taxii", "pull": "taxii"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"distillguard.intel.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'distillguard.intel' has no attribute {name!r}")
