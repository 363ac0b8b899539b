"""Traffic simulator: benign personas and distillation campaigns written as canonical events with labels.

``simulate(out_dir, scenario="demo", seed=0, corpora=None, scale=1.0) -> SimResult``; see docs/simulator.md.
"""

from distillguard.sim.engine import SimResult, simulate
from distillguard.sim.scenarios import PERSONAS, SCENARIOS, get_scenario

__all__ = ["SimResult", "simulate", "SCENARIOS", "PERSONAS", "get_scenario"]
