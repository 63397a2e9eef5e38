"""What every training run shares: the loop (``loop.run_training``), checkpoints and RNG state
(``checkpoint``), samplers and loaders (``data``), SGD groups and schedules (``optim``), runtime
setup (``runtime``) and logs (``log``). Tasks hand the engine ``loop.TrainSettings`` (built from their config,
which the engine does not import) and a ``loop.TrainingRun`` (data, model, loss, evaluator, plot panels).

Nothing is imported here, so importing one piece does not import the others.
"""
