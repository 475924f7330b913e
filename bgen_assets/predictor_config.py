"""The predictors' settings and backbones, importable without torch: experiment declarations are
validated and the asset graph is built without loading it (bgen_assets/predictors/ trains)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BACKBONES = {"bert4rec": "bgen_assets.predictors.bert4rec", "pituning": "bgen_assets.predictors.pituning"}


@dataclass(frozen=True)
class PredictorConfig:
    backbone: str = "bert4rec"
    history: int = 20                 # N: events before the predicted one
    min_history: int = 1              # targets with fewer earlier events in their sequence are skipped
    width: int = 64                   # embedding / hidden width
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 256
    max_epochs: int = 20
    patience: int = 3                 # epochs without a lower validation loss before stopping
    mask_prob: float = 0.2            # Bert4Rec: share of history target positions masked (cloze loss)
    stride: int | None = None         # training samples end every `stride` events; None: history // 2
    seed: int = 0
    threads: int = 1
    device: str = "auto"              # auto: CUDA when present, else CPU

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {sorted(BACKBONES)}")
        if not 1 <= self.training_stride <= self.history + 1:
            raise ValueError("stride must be 1..history + 1, so that every target is in a training sample")

    @property
    def training_stride(self) -> int:
        return self.stride or max(self.history // 2, 1)

    def resolved_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
