"""Export to ONNX and TFLite with parity and op-list gates, latency benchmarks and the Parquet leaderboard."""
