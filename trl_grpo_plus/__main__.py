"""``python -m trl_grpo_plus ...`` (and ``accelerate launch -m trl_grpo_plus train ...``)."""

import sys

from .cli import main

sys.exit(main())
