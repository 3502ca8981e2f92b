"""Variational autoencoder on sklearn's 8x8 digits: reconstruction and sampling."""
