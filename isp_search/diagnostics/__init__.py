"""Diagnostics of the trainer, kept out of ``train/``: ``bench-train`` (where a step's time and FLOPs go),
``check-method`` (the method learns a known answer: :mod:`.learnability`) and its mechanism probes
(:mod:`.mechanism`). Each imports the trainer and steps through its own step functions. ``bench-scheduler``
(:mod:`.scheduler_sim`) compares the search's early stopping on simulated learning curves instead."""
