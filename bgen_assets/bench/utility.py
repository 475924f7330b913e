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
from bgen_assets.quality.fidelity import REAL_VS_REAL, REAL_VS_REAL_FIGURES, at_real_vs_real_bar

SCOPE = "paper"


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
    """Each generator's pooled JSDs, whether they reach the real-vs-real bar, its privacy verdict."""
    from bgen_assets.quality.gate import gate_verdict
    from bgen_assets.warehouse import table_exists

    built = [g for g in generators if table_exists(runner.warehouse, *names.fidelity(dataset, g).key_path)]
    overall = pd.concat([runner.warehouse.query(f"SELECT * FROM {names.fidelity(dataset, g).sql} WHERE level = 'all'")
                         .assign(generator=g) for g in built]).set_index("generator") if built else pd.DataFrame()
    at_bar = at_real_vs_real_bar(overall) if built else pd.Series(dtype=bool)
    return {generator: {**{name: round(float(overall.loc[generator, name]), 4) for name in REAL_VS_REAL_FIGURES},
                        "at_real_vs_real_bar": bool(at_bar.get(generator, False)),
                        "privacy_gate": gate_verdict(runner.warehouse, dataset, generator)[1]}
            for generator in built}


def dataset_record(runner, dataset: str, generators: list[str]) -> dict:
    """What the dataset's paper-scope tables show now: the tables, the best generator per scenario,
    fidelity against the real-vs-real bar."""
    from bgen_assets.results import best_generators, utility_tables

    scores = runner.warehouse.query(f"SELECT * FROM {names.utility_results(dataset).sql}")
    tables = utility_tables(scores)
    return {"experiments": sorted(scores["experiment"].unique()), "tables": tables_record(tables),
            "best_generators": best_generators(tables), "fidelity": fidelity_record(runner, dataset, generators)}


def utility(_runner=None, workers: int = 2) -> dict:
    from bgen_assets.cli import STAGES, run_scope
    from bgen_assets.experiments import load_experiment_specs

    figures: dict = {"scope": SCOPE, "workers": workers, "cpus": os.cpu_count()}
    runner = paper_runner(workers)
    specs = [spec for spec in load_experiment_specs(runner.catalog.models_dir / "experiments") if spec.scoped(SCOPE).build]
    generators = list(dict.fromkeys([g for spec in specs for g in spec.generators] + [REAL_VS_REAL]))
    runner.start_workers()
    try:
        for dataset in runner.project.scope_datasets():
            started, mark = time.perf_counter(), len(runner.stages)
            built = [g for g in generators if runner.graph.has(names.synthetic(dataset, g).key)]
            run_scope(runner, [dataset], built, None, STAGES)
            figures[dataset] = {
                "total_wall_s": round(time.perf_counter() - started, 1),
                "stages": {record.name: {"wall_s": round(record.wall_s, 1), "runs": len(record.outcomes),
                                         "units": record.units} for record in runner.stages[mark:] if record.outcomes},
                **dataset_record(runner, dataset, built),
                "loadavg_1min_after": round(os.getloadavg()[0], 2),
            }
    finally:
        runner.close()
    return figures
