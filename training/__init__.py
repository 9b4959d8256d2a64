"""conla_training: offline training and export (torch). Installed from the folder `training/`."""
