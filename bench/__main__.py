"""``python -m bench [NAME ...]``: run the benchmarks and print ratios against their baselines."""

from __future__ import annotations

import importlib
import sys

BENCHES = ["crypto", "ingest", "playback", "http", "dispose", "redaction", "load", "audit"]


def main(argv: list[str]) -> None:
    names = argv or BENCHES
    for name in names:
        if name not in BENCHES:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")
        importlib.import_module(f"bench.bench_{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
