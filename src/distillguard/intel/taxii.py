"""Push bundles to, and pull them from, a collection on a TAXII 2.1 server (``taxii2-client``).

``push`` sends the bundle's objects as one envelope (split into pages of ``page_size`` objects) and
waits for the server's status. ``pull`` pages through the collection (optionally only objects added after
a time) and returns them as one bundle, which :class:`distillguard.intel.PeerIntel` then validates and
MAC-checks like any other peer bundle: nothing pulled is trusted before that.
"""

from __future__ import annotations

import uuid
from typing import Any

from distillguard.intel.stix import IntelError

__all__ = ["push", "pull", "collection_url"]


def collection_url(api_root: str, collection_id: str) -> str:
    return api_root.rstrip("/") + "/collections/" + collection_id.strip("/") + "/"


def _collection(url: str, user: str | None, password: str | None, verify: bool):
    from taxii2client.v21 import Collection

    if not url.startswith(("http://", "https://")):
        raise IntelError(f"TAXII collection URL must be http(s): {url!r}")
    return Collection(url, user=user, password=password, verify=verify)


def push(bundle: dict, url: str, *, user: str | None = None, password: str | None = None, verify: bool = True,
         page_size: int = 500, timeout_s: int = 60, with_extension_definition: bool = False) -> dict:
    """Add the bundle's objects to the collection at ``url``; returns ``{"success", "failure", "pending"}``
    summed over the pages (``failure`` counts objects the server already held in that version).

    The Extension Definition is left out unless ``with_extension_definition``: its ``version`` property
    breaks object listing on medallion 3.0 (the OASIS reference server reads any ``version`` field as a
    timestamp), and peers need only its id, which is fixed (:data:`distillguard.intel.stix.EXTENSION_ID`)."""
    from taxii2client.exceptions import TAXIIServiceException

    objs = bundle.get("objects") if isinstance(bundle, dict) else None
    if not isinstance(objs, list):
        raise IntelError("push: not a STIX bundle")
    if not with_extension_definition:
        objs = [o for o in objs if not (isinstance(o, dict) and o.get("type") == "extension-definition")]
    col = _collection(url, user, password, verify)
    total = {"success": 0, "failure": 0, "pending": 0}
    try:
        if not col.can_write:
            raise IntelError(f"{url}: the collection is not writable for this user")
        for i in range(0, len(objs), max(1, page_size)):
            env = {"objects": objs[i:i + page_size]}
            st = col.add_objects(env, wait_for_completion=True, poll_interval=0.2, timeout=timeout_s)
            total["success"] += int(st.success_count or 0)
            total["failure"] += int(st.failure_count or 0)
            total["pending"] += int(st.pending_count or 0)
    except TAXIIServiceException as exc:
        raise IntelError(f"{url}: TAXII error: {exc}") from None
    except OSError as exc:  # connection refused, DNS, TLS
        raise IntelError(f"{url}: cannot reach the TAXII server: {exc}") from None
    except Exception as exc:  # requests' HTTPError and friends
        if exc.__class__.__module__.startswith(("requests", "urllib3")):
            raise IntelError(f"{url}: TAXII request failed: {exc}") from None
        raise
    return total


def pull(url: str, *, user: str | None = None, password: str | None = None, verify: bool = True,
         added_after: str | None = None, page_size: int = 500, max_objects: int = 100_000) -> dict:
    """Every object in the collection (added after ``added_after`` when given) as one bundle dict."""
    from taxii2client.exceptions import TAXIIServiceException
    from taxii2client.v21 import as_pages

    col = _collection(url, user, password, verify)
    kw: dict[str, Any] = {}
    if added_after:
        kw["added_after"] = added_after
    objs: list[dict] = []
    try:
        if not col.can_read:
            raise IntelError(f"{url}: the collection is not readable for this user")
        for env in as_pages(col.get_objects, per_request=page_size, **kw):
            got = env.get("objects") or []
            objs.extend(got)
            if len(objs) > max_objects:
                raise IntelError(f"{url}: more than {max_objects} objects; pull with --added-after")
    except TAXIIServiceException as exc:
        raise IntelError(f"{url}: TAXII error: {exc}") from None
    except OSError as exc:
        raise IntelError(f"{url}: cannot reach the TAXII server: {exc}") from None
    except Exception as exc:
        if exc.__class__.__module__.startswith(("requests", "urllib3")):
            raise IntelError(f"{url}: TAXII request failed: {exc}") from None
        raise
    return {"type": "bundle", "id": "bundle--" + str(uuid.uuid4()), "objects": objs}
