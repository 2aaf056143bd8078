"""Helpers around torch."""

from __future__ import annotations

import random


def set_random_seed(seed: int) -> None:
    """Seed Python's, NumPy's (when installed) and torch's generators, every device's."""
    import torch

    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        np.random.seed(seed)
    # Seeds the CPU generator and every CUDA device's (lazily, when CUDA is used).
    torch.manual_seed(seed)
