"""Pure-torch GRPO math. Nothing here imports trl, transformers or accelerate."""
