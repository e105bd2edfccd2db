"""Model Foundry: forge kilobyte-size, dependable text classifiers from a blueprint."""

__version__ = "0.1.0"
