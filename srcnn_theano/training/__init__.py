"""Training runs. The demo is an application: :mod:`srcnn_theano.apps.demo`.

Modules::

    config      recipes: ``TrainConfig`` and the ``paper`` / ``fast`` presets
    data        a run's patch file: cutting it, opening it against the config, its provenance
    checkpoint  the run folder: ``TrainState``, ``last.npz``, logs, the curves plot
    loop        ``train`` and ``resume``: epochs, validation, best model, Ctrl-C, divergence

The names below are the training API, as the notebook and ``train.py`` use it::

    from srcnn_theano import training
    cfg = training.TrainConfig.from_preset("paper", epochs=10)
    result = training.train(cfg, "train_x3.h5", "Set5/", "runs/x3")
"""
from srcnn_theano.training.checkpoint import (LOG_FIELDS, TrainState, clear_run, hold_run,
                                              load_checkpoint)
from srcnn_theano.training.config import PRESETS, TrainConfig
from srcnn_theano.training.data import prepare_h5
from srcnn_theano.training.loop import (DivergedError, TrainingInterrupted, TrainResult,
                                        compiled_trainer, resume, train)

__all__ = ["LOG_FIELDS", "TrainState", "clear_run", "hold_run", "load_checkpoint", "PRESETS",
           "TrainConfig", "prepare_h5", "DivergedError",
           "TrainingInterrupted", "TrainResult", "compiled_trainer", "resume", "train"]
