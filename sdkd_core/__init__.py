"""SDKD and its baselines: models, data, losses, distillers and the training engine (Ray-free)."""
