"""Scoring, calibration, linking integration and findings: the ``scan`` stage (docs/detection.md).

    from distillguard.detect import scan, DetectConfig
    result = scan(["events.jsonl"], out_dir="out", config=DetectConfig(target_fpr=0.001))
"""

from distillguard.detect.allowlist import Allowlist, AllowlistError
from distillguard.detect.detectors import TELLS, AccountTell, default_tells
from distillguard.detect.pipeline import ACCOUNTS_HEADER, ATLAS, Scanner, ScanResult, load_events, scan
from distillguard.detect.scoring import AccountScorer, Calibration, DetectConfig

__all__ = ["scan", "Scanner", "ScanResult", "DetectConfig", "Calibration", "AccountScorer", "Allowlist",
           "AllowlistError", "AccountTell", "TELLS", "default_tells", "ACCOUNTS_HEADER", "ATLAS", "load_events"]
