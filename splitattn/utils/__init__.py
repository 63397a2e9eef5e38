"""Task-agnostic helpers shared by the training pipelines: atomic files, distributed setup, RNG state, logs."""
from .checkpoint import atomic_save, load_checkpoint_file
from .distributed import DistContext, all_reduce_sum, init_distributed, is_main_process
from .rng import capture_rng_state, restore_rng_state, seed_everything

__all__ = [
    "DistContext", "all_reduce_sum", "atomic_save", "capture_rng_state", "init_distributed",
    "is_main_process", "load_checkpoint_file", "restore_rng_state", "seed_everything",
]
