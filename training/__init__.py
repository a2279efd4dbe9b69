"""Bundled trainer: causal 3D VAE (``vae``), video DiT (``dit``, ``rope``), flow matching (``flow``),
text encoders (``text_encoder``), VAE losses (``vae_loss``, ``lpips``), size presets (``config``) and
``train.train_step``.

Submodules are imported explicitly (``from training.vae import CausalVAE``) so that importing the package
stays cheap for the curation side.
"""
