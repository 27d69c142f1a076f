"""lo_stream's benchmarks (``make bench``): see docs/benchmarks.md."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["competitor_parser"]


def competitor_parser(description: str) -> argparse.ArgumentParser:
    """The command line every competitor process takes (the harness starts them all alike)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--commit-interval", type=float, default=1.0, help="seconds")
    return parser
