"""Task-agnostic helpers: distributed setup, config files, command-line inputs, compile and memory options."""

from .distributed import DistContext, all_reduce_sum, init_distributed, is_main_process

__all__ = ["DistContext", "all_reduce_sum", "init_distributed", "is_main_process"]
