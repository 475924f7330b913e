"""`DS/report`: the dataset's self-contained HTML report (bgen_assets/report_html.py), written to
STATE/reports/DS/report.html with its plots beside it, and logged to MLflow."""

import os
from pathlib import Path

import pandas as pd
from dagster import AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from bgen_assets import names
from bgen_assets.assets.evaluation import EVALUATION_GROUP, real_events_sql
from bgen_assets.code_versions import code_version
from bgen_assets.config import Project
from bgen_assets.generators import GeneratorSpec
from bgen_assets.report_html import SOURCE_FILES, figure_pngs, render, result_tables, scale_warning
from bgen_assets.tracking import MlflowTracking
from bgen_assets.names import Relation
from bgen_assets.warehouse import Warehouse, frame_fingerprint, table_exists


def write_atomically(path: Path, data: bytes) -> None:
    incoming = path.with_name(path.name + ".incoming")
    incoming.write_bytes(data)
    os.replace(incoming, path)


def report_asset(project: Project, dataset: str, specs: list[GeneratorSpec]) -> AssetsDefinition:
    evaluations = [relation.key for spec in specs for relation in names.evaluations(dataset, spec.name)]

    @asset(
        key=names.report(dataset).key,
        deps=[names.utility_results(dataset).key, *evaluations],
        group_name=EVALUATION_GROUP,
        description="The dataset's HTML report: utility Tables 1-3, the BehaviorGen ablation (Table 4), fidelity, "
        "privacy and the gate's verdicts, generation costs and plots, over every generator built so far.",
        code_version=code_version(*SOURCE_FILES),
        kinds={"html", "mlflow"},
    )
    def report(warehouse: Warehouse, tracking: MlflowTracking) -> MaterializeResult:
        from bgen_assets.quality import plots

        def read(relation: Relation) -> pd.DataFrame | None:
            exists = table_exists(warehouse, relation.schema, relation.name)
            return warehouse.query(f"SELECT * FROM {relation.sql}") if exists else None

        built = [spec for spec in specs if read(names.privacy(dataset, spec.name)) is not None]
        fidelity = pd.concat([read(names.fidelity(dataset, spec.name)) for spec in built] or [pd.DataFrame()], ignore_index=True)
        privacy = pd.concat([read(names.privacy(dataset, spec.name)) for spec in built] or [pd.DataFrame()], ignore_index=True)
        logs = {spec.name: read(names.synthetic_log(dataset, spec.name)) for spec in built}
        synthetic = {spec.name: read(names.synthetic(dataset, spec.name)) for spec in built}
        scores = read(names.utility_results(dataset))
        scores = scores if scores is not None else pd.DataFrame(columns=["user_id", "generator", "scenario"])
        real = warehouse.query(f"SELECT user_id, intent, role FROM ({real_events_sql(dataset)})")
        tables = result_tables(scores)
        pngs = figure_pngs(fidelity, tables, real, {name: frame for name, frame in synthetic.items() if frame is not None})
        html = render(dataset, project.datasets[dataset].description, scale_warning(project, dataset), built, tables,
                      fidelity, privacy, {name: log for name, log in logs.items() if log is not None}, pngs)
        folder = project.home / "reports" / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in pngs.items():
            write_atomically(folder / name, data)
        write_atomically(folder / "report.html", html.encode())
        with tracking.training_run(dataset, f"report {dataset}", params={"generators": ",".join(s.name for s in built)},
                                   tags={"bgen.kind": "report"}) as run:
            run.client.log_artifacts(run.run_id, str(folder), "report")
        metadata = {"path": MetadataValue.path(str(folder / "report.html")), "generators": [s.name for s in built],
                    "mlflow_run": MetadataValue.url(run.url)}
        if "fidelity.png" in pngs:
            metadata["fidelity"] = MetadataValue.md(plots.markdown_image(pngs["fidelity.png"], "fidelity"))
        return MaterializeResult(data_version=DataVersion(frame_fingerprint(pd.DataFrame({"html": [html]}))),
                                 metadata=metadata)

    return report
