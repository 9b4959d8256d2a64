"""The training loop shared by the LAM, VLA and policy trainers (see trainer.py)."""
