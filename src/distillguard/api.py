"""The public extension contract: the detector interface and its registry.

Built-in detectors register through the same :func:`register` call a third party uses; third-party packages
expose classes under the entry-point group ``distillguard.detectors`` (see docs/detectors.md)::

    [project.entry-points."distillguard.detectors"]
    my_detector = "my_pkg.detectors:MyDetector"

A detector keeps configuration in ``__init__`` keyword arguments, learns from benign (or assumed-benign)
baseline traffic in :meth:`Detector.fit`, keeps learned state in attributes whose names end in ``_``, and
returns from :meth:`Detector.score` a :class:`pyarrow.Table` with one row per input row, holding the
declared ``outputs`` columns and an ``explanation`` string column saying which rule or feature fired.

Request-level detectors read events; account-level detectors read the per-account feature table
(:func:`distillguard.features.account_features`). An account-level detector whose ``inputs`` name raw event
columns (``timestamp``, ``user_text``, ...) reads events instead and returns one row per account, keyed by an
``account_id`` column (the benchmark baselines work this way).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import ClassVar, Literal

import pyarrow as pa

__all__ = ["Detector", "register", "get_detector", "available_detectors", "NotFittedError"]

ENTRY_POINT_GROUP = "distillguard.detectors"


class NotFittedError(RuntimeError):
    """``score`` was called on a detector that needs ``fit`` first."""


class Detector:
    """Base class for every detector, built-in or third-party."""

    #: registry name
    name: ClassVar[str] = ""
    #: ``request``: one score per event; ``account``: one score per account
    level: ClassVar[Literal["request", "account"]] = "request"
    #: columns of the table :meth:`score` returns, besides ``explanation``
    outputs: ClassVar[tuple[str, ...]] = ()
    #: columns :meth:`fit` and :meth:`score` read from their input table
    inputs: ClassVar[tuple[str, ...]] = ()
    #: whether :meth:`score` works before :meth:`fit`
    requires_fit: ClassVar[bool] = False
    #: configuration :func:`get_detector` passes when the caller gives none (for classes whose
    #: ``__init__`` has required keywords, e.g. one class registered under several names)
    default_config: ClassVar[dict] = {}

    def get_params(self) -> dict:
        """The configuration given to ``__init__`` (public attributes without a trailing underscore)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def fit(self, baseline: pa.Table) -> "Detector":
        """Learn from benign or assumed-benign traffic; return ``self``."""
        return self

    def score(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_fitted(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def _check_fitted(self) -> None:
        if self.requires_fit and not self.is_fitted():
            raise NotFittedError(f"{type(self).__name__} must be fitted on baseline traffic before score()")


_REGISTRY: dict[str, type[Detector]] = {}
_loaded_entry_points = False


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: add a detector to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise TypeError(f"{cls!r} is not a Detector subclass")
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plug-in names itself instead of breaking every command
            raise ImportError(f"detector entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        register(cls)


#: modules whose import registers the built-in detectors
BUILTIN_MODULES = ("distillguard.signals", "distillguard.signals.neural", "distillguard.detect.detectors",
                   "distillguard.bench.baselines")


def _load_builtins() -> None:
    import importlib

    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name is None or not mod.startswith(exc.name):
                raise  # a dependency of an existing module is missing: surface it


def available_detectors() -> dict[str, type[Detector]]:
    """Every registered detector, built-in and from entry points, by name."""
    _load_builtins()
    _load_entry_points()
    return dict(_REGISTRY)


def get_detector(name: str, **config) -> Detector:
    """An instance of the detector registered as ``name``, configured with ``default_config`` updated by
    ``config``."""
    detectors = available_detectors()
    if name not in detectors:
        raise KeyError(f"no detector named {name!r}; known: {', '.join(sorted(detectors))}")
    cls = detectors[name]
    return cls(**{**cls.default_config, **config})
