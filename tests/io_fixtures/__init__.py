"""Sample input files for the io tests (hand-written, realistic; no third-party data)."""

from pathlib import Path

FIXTURES = Path(__file__).parent
