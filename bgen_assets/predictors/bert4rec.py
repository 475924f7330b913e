"""Bert4Rec (Sun et al. 2019) over events: a bidirectional transformer encoder trained with a
cloze objective; the next intent is predicted by masking the last position.

Input: the last N events plus the predicted event, whose weekday and time slot are given and
whose location and intent carry the mask token. Each position's embedding is the sum of its
weekday, time slot, location and intent embeddings plus a learned position embedding.

Training loss per sample = cross-entropy of the masked last position (the target) + the mean
cross-entropy of history positions masked at random (`mask_prob`, the cloze part); history
positions are masked by replacing their location and intent with the mask token.
"""

from __future__ import annotations

import torch
from torch import nn

from bgen_assets.predictors import MASK, PAD, SPECIAL, EventEmbedding, EventEncoder, PredictorConfig


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

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        cloze = None
        if self.training and self.config.mask_prob > 0:
            batch, cloze = self._mask_history(batch)
        padding = batch["weekday"] == PAD
        positions = torch.arange(batch["weekday"].shape[1], device=padding.device)
        hidden = self.dropout(self.norm(self.events(batch) + self.positions(positions)))
        hidden = self.final_norm(self.encoder(hidden, src_key_padding_mask=padding))
        logits = self.head(hidden[:, -1])
        if cloze is None:
            return logits, None
        masked, labels = cloze
        position_losses = nn.functional.cross_entropy(self.head(hidden).transpose(1, 2), labels.clamp(min=0),
                                                      reduction="none") * masked
        return logits, position_losses.sum(1) / masked.sum(1).clamp(min=1)

    def _mask_history(self, batch: dict[str, torch.Tensor]):
        """Mask a random share of the real history positions; the labels are their intents."""
        intent = batch["intent"]
        draw = torch.rand(intent.shape, device=intent.device) < self.config.mask_prob
        masked = draw & (intent >= len(SPECIAL))
        masked[:, -1] = False
        labels = intent - len(SPECIAL)
        batch = {**batch, "intent": intent.masked_fill(masked, MASK),
                 "location": batch["location"].masked_fill(masked, MASK)}
        return batch, (masked.float(), labels)
