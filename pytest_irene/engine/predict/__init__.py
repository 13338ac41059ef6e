"""Prediction: regressors per primitive, aggregation strategies, energy model files, cross-validation."""
