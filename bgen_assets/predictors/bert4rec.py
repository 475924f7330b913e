"""Bert4Rec (Sun et al. 2019) over events: a bidirectional transformer encoder trained with a
cloze objective; the next intent is predicted by masking the last position.

Input: the last N events plus the predicted event, whose weekday and time slot are given and
whose location and intent carry the mask token. Each position's embedding is the sum of its
weekday, time slot, location and intent embeddings plus a learned position embedding.

Training (cloze): in every sample the last position and a random share (`mask_prob`) of the
history's target positions have their location and intent replaced by the mask token; the
loss is the weighted mean cross-entropy over all masked positions.
"""

from __future__ import annotations

import torch
from torch import nn

from bgen_assets.predictors.core import MASK, PAD, EventEmbedding, EventEncoder, PredictorConfig


class Model(nn.Module):
    def __init__(self, config: PredictorConfig, encoder: EventEncoder):
        super().__init__()
        self.config = config
        self.events = EventEmbedding(encoder, config.width)
        self.positions = nn.Embedding(config.history + 1, config.width)
        self.norm = nn.LayerNorm(config.width)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, len(encoder.intents))

    def forward(self, batch: dict[str, torch.Tensor]):
        masked = None
        if self.training and self.config.mask_prob > 0:
            batch, masked = self._mask_history(batch)
        padding = batch["weekday"] == PAD
        positions = torch.arange(batch["weekday"].shape[1], device=padding.device)
        hidden = self.dropout(self.norm(self.events(batch) + self.positions(positions)))
        hidden = self.final_norm(self.encoder(hidden, src_key_padding_mask=padding))
        if masked is None:
            return self.head(hidden[:, -1]), None
        logits = self.head(hidden)
        return logits[:, -1], (logits[:, :-1], batch["label"][:, :-1], batch["weight"][:, :-1] * masked[:, :-1])

    def _mask_history(self, batch: dict[str, torch.Tensor]):
        """Mask a random share of the history's target positions (location and intent)."""
        masked = (torch.rand(batch["intent"].shape, device=batch["intent"].device) < self.config.mask_prob)
        masked &= batch["weight"] > 0
        masked[:, -1] = False
        batch = {**batch, "intent": batch["intent"].masked_fill(masked, MASK),
                 "location": batch["location"].masked_fill(masked, MASK)}
        return batch, masked.float()
