"""DeepSeekMath-style benchmark harnesses (installed as `trl_grpo_plus.benchmarks`)."""
