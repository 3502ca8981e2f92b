"""Digit classification with a small ConvNet (sklearn digits, 8x8)."""
