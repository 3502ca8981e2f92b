"""DDPM on sklearn's 8x8 digits: a small noise-prediction U-Net, cosine or linear schedule."""
