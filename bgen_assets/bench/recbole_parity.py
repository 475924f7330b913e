"""Our Bert4Rec against RecBole 1.2.1's BERT4Rec on the same Tokyo split, epochs and model size,
on CPU with one thread each: training seconds of each, their ratio (ours / RecBole, target
<= 0.5) and NDCG@5 of each on the test events.

Split (RecBole's leave-one-out, which we reproduce): per user, events ordered by time; the
last event is the test target, the one before it validation, the rest training. Item =
intent. Every training event with earlier history is a training sample on both sides (RecBole
augments every prefix of the sequence). Neither side validates or stops early: both train for
`epochs`. Our model also sees each event's weekday, time slot and location and the next
event's weekday and time slot (the paper's next-intent task); RecBole's sees the item ids only.

RecBole does not run with numpy 2: it gets its own virtual environment under
STATE/bench/recbole-venv, made on first use (torch==2.13.0 first, then recbole and its pins).
This file is also its entry point there: `python recbole_parity.py DATA_DIR EPOCHS OUT.json`
trains RecBole's BERT4Rec (the RecBole-side code below imports only recbole and the stdlib).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

RECBOLE_REQUIREMENTS = ["recbole==1.2.1", "numpy<2", "pandas<2.2", "scipy<1.14", "setuptools<81", "scikit-learn<1.6"]
MODEL_SIZE = {"layers": 2, "heads": 2, "width": 64, "history": 20, "batch_size": 256}


def recbole_python(home: Path) -> Path:
    """The RecBole venv's interpreter, created on first use."""
    venv = home / "bench" / "recbole-venv"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *RECBOLE_REQUIREMENTS], check=True)
        (venv / ".installed").touch()
    return python


def leave_one_out(events):
    """(events with split = train / valid / test per user, last event test, the one before valid)."""
    events = events.sort_values(["user_id", "ts", "location"], kind="stable").reset_index(drop=True)
    from_end = events.groupby("user_id").cumcount(ascending=False)
    return events.assign(split=from_end.map({0: "test", 1: "valid"}).fillna("train"))


def ours(events, epochs: int) -> dict:
    from bgen_assets.predictors.core import PredictorConfig, fit
    from bgen_assets.predictors.metrics import anchor_intents, evaluate

    config = PredictorConfig(backbone="bert4rec", max_epochs=epochs, threads=1, device="cpu", dropout=0.2,
                             **MODEL_SIZE)
    started = time.perf_counter()
    predictor = fit(config, events[events.split == "train"])
    seconds = time.perf_counter() - started
    test = events[events.split != "valid"].assign(target=lambda f: f.split == "test")
    pooled, _ = evaluate(predictor.predict(test), anchor_intents(events.intent))
    return {"train_seconds": round(seconds, 1), "ndcg@5": round(pooled["ndcg@5"], 4),
            "test_targets": pooled["targets"]}


def recbole(events, epochs: int, home: Path) -> dict:
    python = recbole_python(home)
    work = home / "bench" / "recbole"
    (work / "tokyo").mkdir(parents=True, exist_ok=True)
    inter = events.assign(timestamp=range(len(events)))   # the leave_one_out order, without ties
    inter = inter.rename(columns={"user_id": "user_id:token", "intent": "item_id:token", "timestamp": "timestamp:float"})
    inter[["user_id:token", "item_id:token", "timestamp:float"]].to_csv(work / "tokyo" / "tokyo.inter", sep="\t",
                                                                         index=False)
    out = work / "result.json"
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([str(python), __file__, str(work), str(epochs), str(out)], check=True, env=env, cwd=work)
    return json.loads(out.read_text())


def bert4rec_vs_recbole(runner, dataset: str = "tokyo", epochs: int = 5) -> dict:
    from bgen_assets import names
    from bgen_assets.config import project

    events = leave_one_out(runner.warehouse.query(f"SELECT * FROM {names.sql_model(dataset, 'events').sql}"))
    figures = {"ours": ours(events, epochs), "recbole": recbole(events, epochs, project().home)}
    return {**figures, "dataset": dataset, "epochs": epochs, "users": int(events.user_id.nunique()),
            "events": len(events), "threads": 1, **MODEL_SIZE,
            "time_ratio_ours_over_recbole": round(figures["ours"]["train_seconds"]
                                                  / figures["recbole"]["train_seconds"], 3)}


def _run_recbole(work: str, epochs: int, out: str) -> None:
    """RecBole side (its own venv): BERT4Rec with MODEL_SIZE, full ranking, leave-one-out."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import BERT4Rec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(1)
    config = Config(model="BERT4Rec", dataset="tokyo", config_dict={
        "data_path": work, "checkpoint_dir": f"{work}/saved", "device": "cpu", "use_gpu": False, "seed": 0,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": MODEL_SIZE["history"],
        "n_layers": MODEL_SIZE["layers"], "n_heads": MODEL_SIZE["heads"], "hidden_size": MODEL_SIZE["width"],
        "inner_size": 4 * MODEL_SIZE["width"], "train_batch_size": MODEL_SIZE["batch_size"], "loss_type": "CE",
        "train_neg_sample_args": None, "epochs": epochs, "eval_step": epochs + 1, "stopping_step": epochs + 1,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["NDCG"], "topk": [5], "valid_metric": "NDCG@5", "show_progress": False, "worker": 0})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    model = BERT4Rec(config, train.dataset)
    trainer = Trainer(config, model)
    started = time.perf_counter()
    trainer.fit(train, saved=False, show_progress=False)
    seconds = time.perf_counter() - started
    result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    Path(out).write_text(json.dumps({"train_seconds": round(seconds, 1), "ndcg@5": round(float(result["ndcg@5"]), 4),
                                     "test_targets": int(len(test.dataset.inter_feat))}))


if __name__ == "__main__":
    _run_recbole(sys.argv[1], int(sys.argv[2]), sys.argv[3])
