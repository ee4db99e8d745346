"""The search engine: the only package that imports Ray and Optuna (search spaces, searcher, trainable, tuner,
post-processing)."""
