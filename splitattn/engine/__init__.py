"""What every training run shares: the loop (``loop.run_training``), checkpoints and RNG state
(``checkpoint``), samplers and loaders (``data``), SGD groups and schedules (``optim``), runtime
setup (``runtime``), logs (``log``) and curves (``plots``). Tasks hand the engine a ``loop.TrainingRun``.

Nothing is imported here, so importing one piece does not import the others.
"""
