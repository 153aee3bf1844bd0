"""Each step's products with the transitions taken (temt_core/transition_products.py): the slots grouped by action
(`blocks`) against every action at once (`wide`), inside whole training steps.

    python benchmarks/transition_products_ab.py                  # CPU, one thread, prints JSON
    python benchmarks/transition_products_ab.py --members 8      # and a population of 8, both ways
    python benchmarks/transition_products_ab.py --spatial 200    # and two spatial Trainers (default config)

Arms `wide` and `blocks` (`positions.products` / `TEMtPopulation.products` = 'wide' and 'blocks'); the harness, its
config and its arms are switch_ab.py's. The recurrence, the landmark loop and their backwards all use the switch.
"""
from __future__ import annotations

from switch_ab import Switch, main


def _set_model(model, on: bool) -> None:
    model.positions.products = "blocks" if on else "wide"


def _set_population(pop, on: bool) -> None:
    pop.products = "blocks" if on else "wide"


if __name__ == "__main__":
    main(Switch("wide", "blocks", _set_model, _set_population), __doc__)
