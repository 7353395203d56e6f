"""trl-grpo-plus: the DeepSeekMath GRPO objective on TRL, with every choice explicit.

`GRPOPlusConfig` and `GRPOPlusTrainer` are imported lazily so that light users of the package
(verifier worker processes, the benchmark CLI) do not pay for importing TRL.
"""

from ._version import __version__

__all__ = ["GRPOPlusConfig", "GRPOPlusTrainer", "__version__"]


def __getattr__(name):
    if name == "GRPOPlusConfig":
        from .config import GRPOPlusConfig

        return GRPOPlusConfig
    if name == "GRPOPlusTrainer":
        from .trainer import GRPOPlusTrainer

        return GRPOPlusTrainer
    raise AttributeError(f"module 'trl_grpo_plus' has no attribute {name!r}")
