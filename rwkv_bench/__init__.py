"""rwkv-bench: RWKV-4 against transformer baselines, measured."""
__version__ = "0.1.0"
