"""Speed benchmarks against the real peers. Run as `python -m trl_grpo_plus.benchmarks.speed.<name>`."""
