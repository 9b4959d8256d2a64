"""Models, one file each: lam (latent action model), nsvq (its quantizer), contrastive (ConLA's losses)."""
