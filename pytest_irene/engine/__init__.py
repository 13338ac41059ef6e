"""The engine: ``nn.Module`` → trace → :class:`EnergyTree` with model features → prediction.

Everything here works without pytest. ``predict/`` holds what turns features into
joules: the regressors, the strategies, the energy model file and cross-validation.
"""
