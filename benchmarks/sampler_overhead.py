"""Superseded by ``bench_sampler.py`` (issue 19): this name is kept so that ``make bench`` and the
command quoted in docs/paper004.md keep working; it runs ``bench_sampler.py`` with
the same arguments. The old wall-clock, 7-block measurement printed ratios below 1.0 on a loaded
machine; see docs/performance.md."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampler import main

if __name__ == "__main__":
    main()
