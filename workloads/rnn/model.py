"""A recurrent encoder (LSTM or GRU) with a linear head."""
from __future__ import annotations

import torch
from torch import nn


class RecurrentNet(nn.Module):
    """(B, T, F) -> (B, outputs): the last hidden state through a small head.

    classify: F=8 pixels per row, T=8 rows, outputs=10 logits.
    forecast: F=1 value per step, T=window, outputs=horizon values (direct multi-step).
    """

    def __init__(self, *, input_size: int, outputs: int, cell: str = "lstm", hidden: int = 64,
                 layers: int = 1, dropout: float = 0.0):
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_cls(input_size, hidden, num_layers=layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # (B, 1, 8, 8) digit images: rows are the time steps
            x = x[:, 0]
        if x.dim() == 2:  # (B, T) univariate series
            x = x.unsqueeze(-1)
        out, _ = self.rnn(x)
        return self.head(out[:, -1])
