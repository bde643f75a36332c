"""The training core: one run (``run``: build, fit, test, write results) and the multi-stage
pipeline (``pipeline``: a cached pre-training stage, then the main run; one Hydra job)."""
