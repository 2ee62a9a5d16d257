"""genlab: config-driven experiments with deep generative models (PCA, AE, VAE, IWAE, VaDE, GAN)."""

__version__ = "0.1.0"
