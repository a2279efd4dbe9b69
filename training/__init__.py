"""Bundled trainer: causal 3D VAE (``vae``), video DiT (``dit``, ``rope``), flow matching (``flow``),
text encoders (``text_encoder``), VAE losses (``vae_loss``, ``lpips``), size presets (``config``),
``train.train_step`` / ``train.accumulated_step``, tier data (``data``: bucket batch sampler, dataset,
DataLoader), the curriculum (``curriculum``) and the training system (``trainer``: checkpoints in
``checkpoint``, ``ema``, exact resume, Ray Train).

Submodules are imported explicitly (``from training.vae import CausalVAE``) so that importing the package
stays cheap for the curation side.
"""
