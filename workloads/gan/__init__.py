"""DCGAN-style generator and discriminator on sklearn's 8x8 digits."""
