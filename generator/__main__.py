"""``python -m generator ...`` is ``modelcard ...``: the form torchrun launches
(``torchrun --nproc_per_node=8 -m generator run report.yaml``)."""

import sys

from generator.cli import main

if __name__ == "__main__":
    sys.exit(main())
