"""The measurement rig: resource sampling, node runner, host fingerprint, power meters,
the emonPi emulator and calibration (``pytest --irene-calibrate``, ``irene calibrate``)."""
