"""The shared core: configs, registries, run directories, the training loop, seeding, errors."""
