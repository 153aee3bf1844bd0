"""The grouped prediction read (temt_core/grouped_read.py) against the full read, inside whole training steps.

    python benchmarks/grouped_read_ab.py                  # CPU, one thread, prints JSON
    python benchmarks/grouped_read_ab.py --members 8      # and a population of 8, both ways
    python benchmarks/grouped_read_ab.py --spatial 200    # and two spatial Trainers (default config), 200 steps

Arms `full` and `grouped` (`attention.grouped` / `TEMtPopulation.grouped` off and on); the harness, its config and
its arms are switch_ab.py's. The store at the reference config is about half padding, which the grouped read skips.
"""
from __future__ import annotations

from switch_ab import Switch, main


def _set_model(model, on: bool) -> None:
    model.attention.grouped = on


def _set_population(pop, on: bool) -> None:
    pop.grouped = on


if __name__ == "__main__":
    main(Switch("full", "grouped", _set_model, _set_population), __doc__)
