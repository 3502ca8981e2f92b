"""Sequence models (LSTM or GRU): digits read row by row, or a multi-seasonal forecast."""
