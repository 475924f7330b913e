"""`make bench ONLY=utility` (key `utility`, an hour or more): `bgen run --scope paper` on the
project's own state directory (only what is stale or missing is rebuilt), for the generators of
the experiments the scope builds plus `other_population_week` (the real-vs-real fidelity bar);
then, per dataset: Tables 1-3 with their intervals, the best generator per scenario, each
generator's fidelity against the bar and its privacy verdict, and the wall time of each stage.
"""

from __future__ import annotations

import os
import time

import pandas as pd

from bgen_assets import names
from bgen_assets.config import project

SCOPE = "paper"
FIDELITY_BAR = "other_population_week"
FIDELITY_FIGURES = ("jsd_intent", "jsd_time_of_week")


def paper_runner(workers: int):
    from dagster import DagsterInstance

    from bgen_assets.runs import Runner, prepare_dagster_home

    scoped = project().model_copy(update={"scope": SCOPE})
    prepare_dagster_home(scoped)
    return Runner.for_project(scoped, DagsterInstance.get(), workers=workers)


def tables_record(tables: dict[str, pd.DataFrame]) -> dict:
    """Each table's rows with figures as plain records (NaN left out)."""
    return {name: [{key: value for key, value in row.items() if not (isinstance(value, float) and pd.isna(value))}
                   for row in table.astype(object).to_dict("records")] for name, table in tables.items()}


def fidelity_record(runner, dataset: str, generators: list[str]) -> dict:
    """Each generator's pooled fidelity figures and privacy verdict, with whether it reaches the bar."""
    from bgen_assets.quality.gate import gate_verdict
    from bgen_assets.warehouse import table_exists

    figures = {}
    for generator in generators:
        relation = names.fidelity(dataset, generator)
        if not table_exists(runner.warehouse, relation.schema, relation.name):
            continue
        row = runner.warehouse.query(f"SELECT * FROM {relation.sql} WHERE level = 'all'").iloc[0]
        passed, reason = gate_verdict(runner.warehouse, dataset, generator)
        figures[generator] = {**{name: round(float(row[name]), 4) for name in FIDELITY_FIGURES},
                              "privacy_gate_passed": passed, "privacy_gate": reason}
    bar = figures.get(FIDELITY_BAR, {})
    for generator, values in figures.items():
        values["at_real_vs_real_bar"] = bool(bar) and all(values[name] <= bar[name] for name in FIDELITY_FIGURES)
    return figures


def utility(_runner=None, workers: int = 2) -> dict:
    from bgen_assets.cli import STAGES, run_scope
    from bgen_assets.experiments import load_experiment_specs
    from bgen_assets.results import best_generators, utility_tables

    figures: dict = {"scope": SCOPE, "workers": workers, "cpus": os.cpu_count()}
    runner = paper_runner(workers)
    specs = [spec for spec in load_experiment_specs(runner.catalog.models_dir / "experiments") if spec.scoped(SCOPE).build]
    generators = list(dict.fromkeys([g for spec in specs for g in spec.generators] + [FIDELITY_BAR]))
    runner.start_workers()
    try:
        for dataset in runner.project.scope_datasets():
            started, mark = time.perf_counter(), len(runner.stages)
            run_scope(runner, [dataset], [g for g in generators if runner.graph.has(names.synthetic(dataset, g).key)],
                      None, STAGES)
            scores = runner.warehouse.query(f"SELECT * FROM {names.utility_results(dataset).sql}")
            tables = utility_tables(scores)
            figures[dataset] = {
                "total_wall_s": round(time.perf_counter() - started, 1),
                "stages": {record.name: {"wall_s": round(record.wall_s, 1), "runs": len(record.outcomes),
                                         "units": record.units} for record in runner.stages[mark:] if record.outcomes},
                "tables": tables_record(tables),
                "best_generators": best_generators(tables),
                "fidelity": fidelity_record(runner, dataset, generators),
                "loadavg_1min_after": round(os.getloadavg()[0], 2),
            }
    finally:
        runner.close()
    return figures
