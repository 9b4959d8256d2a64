"""The trainers, one per model on the shared engine (conla_training.engine): `lam` (stage 1) and the
VLA's latent pretraining and action-head finetuning (stages 2 and 3)."""
