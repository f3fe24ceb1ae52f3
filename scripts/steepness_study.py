"""Store chapter 3's steepening as data for the scorecard: ``python scripts/steepness_study.py``.

Writes ``data/landscape/digits-steepness.json`` (atomically, with provenance): the median
slope and linear range of the inner problem at snapshots of a 30-epoch Amata(2, 10) run on
``digits`` (:func:`amata_lib.study.scorecard.steepness_study`). One torch thread, seed 0.
"""
import sys
from pathlib import Path

import torch

from amata_lib import load
from amata_lib.infra.results import provenance, write_json_atomic
from amata_lib.study.scorecard import steepness_study

OUT = Path(__file__).resolve().parents[1] / "data" / "landscape" / "digits-steepness.json"

if __name__ == "__main__":
    torch.set_num_threads(1)
    record = steepness_study(*load("digits"))
    record = {"schema": "amata-steepness/1",
              "provenance": provenance("cpu", "python scripts/steepness_study.py"), **record}
    write_json_atomic(OUT, record)
    print(f"wrote {OUT}")
    sys.exit(0)
