"""BehaviorLM-style progressive fine-tuning (anchor intents, then a difficulty-balanced subset)
as a schedule for any backbone.

Anchor intents are the most frequent intents covering `anchor_share` of the training targets
(metrics.anchor_intents); the others are the tail.
- Stage 1: fine-tune (from `init`, which keeps the general knowledge) on the samples whose
  target is an anchor intent.
- Stage 2: fine-tune the stage-1 model on a difficulty-balanced subset of all samples.
  Difficulty = the stage-1 model's cross-entropy on the sample. Anchor and tail samples are
  drawn as two strata of equal size (`per_stratum`, default: the number of tail samples, so
  every tail sample is kept), each without replacement with probability proportional to
  difficulty, so hard samples are favoured. Seeded by config.seed.
Both stages run the shared training loop with early stopping on the same validation frame.
The returned predictor's history holds both stages' epochs (numbered on across the stages),
each marked with its "stage".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from bgen_assets.predictors.core import PredictorConfig, TrainedPredictor, fit
from bgen_assets.predictors.metrics import anchor_intents


def _targets(frame: pd.DataFrame) -> pd.Series:
    return frame["target"].astype(bool) if "target" in frame else pd.Series(True, index=frame.index)


def balanced_subset(losses: pd.Series, is_anchor: pd.Series, per_stratum: int | None, seed: int) -> pd.Index:
    """Rows drawn per stratum (anchor / tail) with probability proportional to their loss."""
    rng = np.random.default_rng(seed)
    size = per_stratum if per_stratum is not None else int((~is_anchor).sum())
    chosen = []
    for stratum in (losses[is_anchor], losses[~is_anchor]):
        stratum = stratum.dropna()
        if len(stratum) <= size:
            chosen.append(stratum.index)
            continue
        difficulty = stratum.to_numpy() + 1e-6
        chosen.append(stratum.index[rng.choice(len(stratum), size, replace=False, p=difficulty / difficulty.sum())])
    return chosen[0].append(chosen[1])


def progressive_fit(config: PredictorConfig, train: pd.DataFrame | Mapping[str, pd.DataFrame],
                    valid: pd.DataFrame | None = None, *, init: TrainedPredictor | None = None,
                    anchor_share: float = 0.8, anchors: list[str] | None = None, per_stratum: int | None = None,
                    on_epoch: Callable[[int, dict], None] | None = None, **fit_options) -> TrainedPredictor:
    """Stage 1 on anchor-target samples, stage 2 on a difficulty-balanced anchor/tail subset.
    `fit_options` (intents, locations, regulariser) go to both stages' `fit`."""
    sources = {name: frame.reset_index(drop=True)
               for name, frame in (train.items() if isinstance(train, Mapping) else [("train", train)])}
    if anchors is None:
        anchors = anchor_intents(pd.concat([f.loc[_targets(f), "intent"] for f in sources.values()]), anchor_share)

    def stage_log(stage: int, first_epoch: int):
        """Epochs numbered on across stages, so a tracker's steps do not collide."""
        if on_epoch is None:
            return None
        return lambda epoch, figures: on_epoch(first_epoch + epoch, {**figures, "stage": stage})

    stage1_sources = {name: frame.assign(target=_targets(frame) & frame["intent"].isin(anchors))
                      for name, frame in sources.items()}
    stage1 = fit(config, stage1_sources, valid, init=init, on_epoch=stage_log(1, 0), **fit_options)

    stage2_sources = {}
    for i, (name, frame) in enumerate(sources.items()):
        losses = stage1.target_losses(frame)
        chosen = balanced_subset(losses, frame.loc[losses.index, "intent"].isin(anchors), per_stratum,
                                 config.seed + i)
        stage2_sources[name] = frame.assign(target=frame.index.isin(chosen))
    stage2 = fit(config, stage2_sources, valid, init=stage1, on_epoch=stage_log(2, len(stage1.history)),
                 **fit_options)
    stage2.history = [{**r, "stage": 1} for r in stage1.history] + [
        {**r, "epoch": len(stage1.history) + r["epoch"], "stage": 2} for r in stage2.history]
    return stage2
