"""A training asset stopped between its seeds resumes at the first unfinished seed: each seed is
minutes at full scale, and a stopped paper-scope run used to lose every finished seed of the asset
it was in. Finished seeds are kept under a key of their inputs and removed once the table is written."""


import pandas as pd
import pytest
from conftest import tokyo_experiment_runner
from dagster import AssetKey
from mlflow import MlflowClient

from bgen_assets.assets import training
from bgen_assets.runs import RunFailed, Runner

TWO_SEEDS = """description: A small Bert4Rec with two training seeds, to stop between them.
backbone: bert4rec
pretrain: {history: 8, width: 16, layers: 1, heads: 1, max_epochs: 2, patience: 1, seed: 1}
finetune: {max_epochs: 1}
generators: [markov]
seeds: 2
scope: {demo: {seeds: 2}}
"""
REAL, WITH_MARKOV = AssetKey(["tokyo", "tiny_real"]), AssetKey(["tokyo", "tiny_with_markov"])


@pytest.fixture(scope="module")
def runner(tmp_path_factory, fixture_data):
    with tokyo_experiment_runner(tmp_path_factory.mktemp("resume"), fixture_data, ("markov",), TWO_SEEDS) as built:
        built.materialize_user("tokyo", min(built.project.scopes["demo"]["tokyo"].users))
        built._materialize([AssetKey(["tokyo", name]) for name in ("fidelity_markov", "privacy_markov")])
        yield built


def stop_at_seed_two(monkeypatch, generator: str) -> None:
    """Make the pretraining of seed 2 on `generator` ("real" for the real-data asset) fail."""
    pretrain = training.pretrain

    def stopping(spec, data, config, scope_users, trained_on, *rest):
        if config.seed == 2 and trained_on == generator:
            raise KeyboardInterrupt("stopped between seeds")
        return pretrain(spec, data, config, scope_users, trained_on, *rest)

    monkeypatch.setattr(training, "pretrain", stopping)


def pretraining_runs(runner: Runner) -> list[tuple[str, str]]:
    client = MlflowClient(tracking_uri=runner.defs.resources["tracking"].uri())
    experiment = client.get_experiment_by_name("tokyo")
    return sorted((run.info.run_name, run.info.status) for run in client.search_runs([experiment.experiment_id])
                  if "pretrain" in run.info.run_name)


def test_a_stopped_training_resumes_at_its_first_unfinished_seed(runner, monkeypatch):
    unfinished = runner.project.home / "predictors" / "tokyo" / "tiny"
    with monkeypatch.context() as patch:
        stop_at_seed_two(patch, "real")
        with pytest.raises((RunFailed, KeyboardInterrupt)):
            runner._materialize([REAL])
    assert [path.name for path in (unfinished / "real.unfinished").glob("*/*")] == ["seed_1"]

    with monkeypatch.context() as patch:
        stop_at_seed_two(patch, "markov")
        with pytest.raises((RunFailed, KeyboardInterrupt)):
            runner._materialize([REAL, AssetKey(["tokyo", "training_set_markov"]), WITH_MARKOV])
    assert not (unfinished / "real.unfinished").exists()   # the real asset's table is written: nothing kept

    runner._materialize([WITH_MARKOV])
    assert pretraining_runs(runner) == [   # every seed trained once, the stopped ones failed
        ("tiny: pretrain on real + markov, seed 1", "FINISHED"),
        ("tiny: pretrain on real + markov, seed 2", "FAILED"),
        ("tiny: pretrain on real + markov, seed 2", "FINISHED"),
        ("tiny: pretrain on real, seed 1", "FINISHED"),
        ("tiny: pretrain on real, seed 2", "FAILED"),
        ("tiny: pretrain on real, seed 2", "FINISHED"),
    ]
    scores = runner.warehouse.query("SELECT * FROM tokyo.tiny_with_markov")
    assert sorted(scores["seed"].unique()) == [1, 2]
    assert set(scores["scenario"]) == {"pretraining", "replacement", "augmentation"}
    assert not (unfinished / "with_markov.unfinished").exists()
    assert sorted(path.name for path in (unfinished / "real").iterdir()) == ["seed_1", "seed_2"]


def test_seeds_kept_under_other_inputs_are_never_read(tmp_path):
    rows = pd.DataFrame({"seed": [1], "user_id": ["all"], "ndcg@5": [0.5]})
    kept = training.FinishedSeeds(tmp_path / "with_markov.unfinished", "declaration", "training set v1")
    kept.keep(1, rows)
    pd.testing.assert_frame_equal(kept.rows(1), rows)
    assert kept.rows(2) is None
    assert training.FinishedSeeds(tmp_path / "with_markov.unfinished", "declaration", "training set v2").rows(1) is None
    kept.clear()
    assert not (tmp_path / "with_markov.unfinished").exists()
