"""``python -m alexnet.report SWEEP_DIR``: write report.md, report.csv and report.png there."""

from __future__ import annotations

import sys

from alexnet.report import main

if __name__ == "__main__":
    sys.exit(main())
