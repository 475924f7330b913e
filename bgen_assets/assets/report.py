"""`DS/report`: the dataset's self-contained HTML report (bgen_assets/report_html.py), written to
STATE/reports/DS/report.html with its plots beside it, and logged to MLflow."""

import hashlib
import os
from pathlib import Path

import pandas as pd
from dagster import AssetKey, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from bgen_assets.assets.evaluation import EVALUATION_GROUP, EVALUATION_TABLES
from bgen_assets.config import Project
from bgen_assets.generators import GeneratorSpec
from bgen_assets.report_html import SOURCE_FILES, figure_pngs, render, scale_warning
from bgen_assets.tracking import MlflowTracking
from bgen_assets.warehouse import Warehouse, frame_fingerprint, table_exists


def write_atomically(path: Path, data: bytes) -> None:
    incoming = path.with_name(path.name + ".incoming")
    incoming.write_bytes(data)
    os.replace(incoming, path)


def report_asset(project: Project, dataset: str, specs: list[GeneratorSpec]) -> AssetsDefinition:
    evaluations = [f"{table}_{spec.name}" for spec in specs for table in EVALUATION_TABLES]

    @asset(
        key=[dataset, "report"],
        deps=[AssetKey([dataset, name]) for name in ("utility_results", *evaluations)],
        group_name=EVALUATION_GROUP,
        description="The dataset's HTML report: utility Tables 1-3, the BehaviorGen ablation (Table 4), fidelity, "
        "privacy and the gate's verdicts, generation costs and plots, over every generator built so far.",
        code_version=hashlib.sha256(b"".join(path.read_bytes() for path in SOURCE_FILES)).hexdigest()[:12],
        kinds={"html", "mlflow"},
    )
    def report(warehouse: Warehouse, tracking: MlflowTracking) -> MaterializeResult:
        from bgen_assets.quality import plots

        def read(table: str) -> pd.DataFrame | None:
            return warehouse.query(f'SELECT * FROM "{dataset}"."{table}"') if table_exists(warehouse, dataset, table) else None

        built = [spec for spec in specs if read(f"privacy_{spec.name}") is not None]
        fidelity = pd.concat([read(f"fidelity_{spec.name}") for spec in built] or [pd.DataFrame()], ignore_index=True)
        privacy = pd.concat([read(f"privacy_{spec.name}") for spec in built] or [pd.DataFrame()], ignore_index=True)
        logs = {spec.name: read(f"synthetic_{spec.name}_log") for spec in built}
        synthetic = {spec.name: read(f"synthetic_{spec.name}") for spec in built}
        scores = read("utility_results")
        scores = scores if scores is not None else pd.DataFrame(columns=["user_id", "generator", "scenario"])
        real = warehouse.query(f'SELECT e.user_id, e.intent, s.role FROM "{dataset}".events e JOIN "{dataset}".user_split s USING (user_id)')
        pngs = figure_pngs(fidelity, scores, real, {name: frame for name, frame in synthetic.items() if frame is not None})
        html = render(dataset, project.datasets[dataset].description, scale_warning(project, dataset), built, scores,
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
