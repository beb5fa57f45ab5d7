"""The training loop: epochs of minibatches, validation, checkpoints, Ctrl-C and exact resume.

::

    from srcnn_theano import training
    cfg = training.TrainConfig.from_preset("paper", epochs=10)
    h5 = training.prepare_h5("T91/", "runs/x3", cfg)          # or an existing .h5
    result = training.train(cfg, h5, "Set5/", "runs/x3")
    result = training.resume("runs/x3")                        # after an interruption

:func:`train` and :func:`resume` run the same loop (:class:`_Loop`) on a
:class:`~srcnn_theano.training.checkpoint.TrainState`: a new one, or the
one read from ``last.npz``.

Exactness
---------
An epoch's minibatch order comes from a ``numpy.random.Generator`` whose
state is stored at the start of every epoch, so a run resumed from any
checkpoint (epoch boundary or the step where Ctrl-C was honoured) performs
the same floating-point operations as an uninterrupted run and ends with
byte-identical weights (on the same machine and BLAS).

Validation is the paper's: whole images, Y channel, MATLAB bicubic, scale
pixels shaved (:func:`srcnn_theano.evaluation.protocol.evaluate_images`),
with the network applied with replicate padding as the authors' test code does.
"""
import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.datasets import load_ground_truth
from srcnn_theano.evaluation.protocol import evaluate_images
from srcnn_theano.network.weights import Weights, load, save
from srcnn_theano.patches.store import DEFAULT_MEMORY_BUDGET, iterate_minibatches
from srcnn_theano.training.checkpoint import (TrainState, clear_run, hold_run, load_checkpoint,
                                              save_checkpoint, write_logs)
from srcnn_theano.training.config import learning_rate_at
from srcnn_theano.training.data import (data_provenance, initial_model, open_patches,
                                        weights_provenance)


class DivergedError(SRCNNError):
    """The training loss became NaN or infinite; the last checkpoint is kept."""

    exit_status = 3


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``str()`` says what was saved and how to resume."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    run_dir : str
    log : list of dict
        One row per epoch (:data:`~srcnn_theano.training.checkpoint.LOG_FIELDS`).
    best_epoch : int
    best_psnr, bicubic_psnr : float
        Mean validation PSNR (dB) of the best epoch and of bicubic.
    weights : srcnn_theano.network.weights.Weights
        The final weights (``best.npz`` holds the best ones).
    """

    run_dir: str
    log: list
    best_epoch: int
    best_psnr: float
    bicubic_psnr: float
    weights: object


_TRAINERS = {}


def compiled_trainer(config):
    """A cached :class:`~srcnn_theano.network.functions.Trainer` for the config's graph.

    Compiling takes seconds to minutes, so one Trainer per (architecture,
    padding, optimizer, momentum, multipliers, loss) is kept per process.
    Its weights and optimizer state are whatever the last user left: the
    loop sets both before training.
    """
    from srcnn_theano.network.functions import PAPER_LR_MULTIPLIERS, Trainer

    key = (config.arch, config.filters, config.padding, config.optimizer, config.momentum,
           config.lr_multipliers, config.loss)
    if key not in _TRAINERS:
        mult = PAPER_LR_MULTIPLIERS if config.lr_multipliers == "paper" else None
        _TRAINERS[key] = Trainer(initial_model(config), config.optimizer, config.learning_rate,
                                 config.momentum, mult, config.loss)
    return _TRAINERS[key]


def train(config, train_h5, val_dir, out_dir, *, force=False, command=None, progress=True,
          memory_budget=DEFAULT_MEMORY_BUDGET, callback=None, init_weights=None):
    """Train from an HDF5 patch file, validating on whole images after each epoch.

    Parameters
    ----------
    config : TrainConfig
    train_h5 : str
        Patch file (:func:`~srcnn_theano.training.data.prepare_h5`,
        ``data_prep/generate_h5.py`` or the authors' MATLAB code); its scale
        and label size must suit ``config``.
    val_dir : str
        Folder of whole validation images, e.g. Set5.
    out_dir : str
        Run folder (see :mod:`srcnn_theano.training.checkpoint`); created if
        missing, and held by this process while it trains (:func:`hold_run`).
    force : bool
        Start over in a run folder that already holds a checkpoint.
    command : str or None
        The command line, recorded in ``best.npz``'s provenance.
    progress : bool
        tqdm bars and per-epoch lines on stderr.
    memory_budget : int
        Bytes of patches held in memory (:func:`~srcnn_theano.patches.store.iterate_minibatches`).
    callback : callable or None
        ``callback(epoch, step, loss)`` after every step (1-based epoch, global step).
    init_weights : str or None
        Start from these weights (a ``.npz`` of the same architecture, e.g.
        the x3 model to fine-tune for x2) instead of the config's init.

    Returns
    -------
    TrainResult

    Raises
    ------
    SRCNNError
        Bad data or options; a run folder another process holds.
        :class:`DivergedError` when the loss is not finite.
    TrainingInterrupted
        On Ctrl-C, after saving what can be resumed exactly.
    """
    config.check()
    with hold_run(out_dir):
        return _train(config, train_h5, val_dir, out_dir, force, command, progress, memory_budget,
                      callback, init_weights)


def _train(config, train_h5, val_dir, out_dir, force, command, progress, memory_budget, callback,
           init_weights):
    clear_run(out_dir, force)
    val_images = load_ground_truth(val_dir)
    weights = (initial_model(config).get_weights() if init_weights is None
               else _load_init_weights(init_weights, config))
    with open_patches(train_h5, config) as patches:
        state = TrainState(
            config=config, train_h5=os.path.abspath(train_h5), val_dir=os.path.abspath(val_dir),
            data=data_provenance(patches), commands=[command or "training.train()"],
            init_weights=weights_provenance(init_weights),
            rng_state=np.random.default_rng(config.seed).bit_generator.state)
        return _Loop(state, patches, val_images, out_dir, memory_budget, progress,
                     callback).run(weights, None)


def resume(run_dir, epochs=None, command=None, progress=True, memory_budget=DEFAULT_MEMORY_BUDGET,
           callback=None):
    """Continue the run in ``run_dir`` from its ``last.npz`` checkpoint, in the same loop.

    ``epochs`` raises the total number of epochs (the result equals a run
    started with that many epochs, except that a cosine schedule is
    stretched from the resume point on). The run folder is held by this
    process while it trains (:func:`hold_run`).
    """
    if not os.path.isfile(os.path.join(run_dir, "last.npz")):   # no .lock in a folder without a run
        raise SRCNNError(f"no checkpoint to resume from: {os.path.join(run_dir, 'last.npz')}")
    with hold_run(run_dir):
        return _resume(run_dir, epochs, command, progress, memory_budget, callback)


def _resume(run_dir, epochs, command, progress, memory_budget, callback):
    state, weights, opt = load_checkpoint(os.path.join(run_dir, "last.npz"))
    if epochs is not None:
        if epochs < state.epoch:
            raise SRCNNError(f"--epochs {epochs} is fewer than the {state.epoch} already done")
        state.config = dataclasses.replace(state.config, epochs=epochs)
    state.config.check()
    for path, what in ((state.train_h5, "training file"), (state.val_dir, "validation folder")):
        if not os.path.exists(path):
            raise SRCNNError(f"the run's {what} is gone: {path}")
    val_images = load_ground_truth(state.val_dir)
    state.commands.append(command or "training.resume()")
    with open_patches(state.train_h5, state.config) as patches:
        return _Loop(state, patches, val_images, run_dir, memory_budget, progress,
                     callback).run(weights, opt)


def _load_init_weights(path, config):
    """Arrays of a weights file to start from; its architecture must be the config's."""
    w = load(path)
    want = config.architecture()
    if any(w.architecture[k] != v for k, v in want.items()) or w.architecture["channels"] != 1:
        a = w.architecture
        raise SRCNNError(f"--init-weights {path} is a {w.name} model with {a['n1']},{a['n2']} filters; "
                         f"this run trains {config.arch} with {want['n1']},{want['n2']}")
    return w.arrays


def _weights_of(model, config):
    return Weights(model.get_weights(), dict(model.config), config.scale)


class _SigintDeferred(contextlib.AbstractContextManager):
    """Turn the first Ctrl-C into a flag checked between steps; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("interrupt: stopping after this step (Ctrl-C again to stop now)", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class _Loop:
    """The epochs of a run; :attr:`state` (a TrainState) is updated in place and checkpointed."""

    def __init__(self, state, patches, val_images, out_dir, memory_budget, progress, callback):
        self.state, self.config = state, state.config
        self.patches, self.val_images, self.out_dir = patches, val_images, out_dir
        self.memory_budget, self.progress, self.callback = memory_budget, progress, callback
        self.steps_per_epoch = -(-patches.count // self.config.batch_size)
        self.last = os.path.join(out_dir, "last.npz")
        self.trainer = compiled_trainer(self.config)

    def run(self, weights, optimizer_state):
        """Train from ``weights`` / ``optimizer_state`` (None: zeros) to the last epoch."""
        st = self.state
        self.trainer.model.set_weights(weights)
        self.trainer.set_state(optimizer_state if optimizer_state is not None else
                               [np.zeros_like(a) for a in self.trainer.get_state()])
        if st.step == 0:
            self.checkpoint()
        try:
            with _SigintDeferred() as sigint:
                while st.epoch < self.config.epochs:
                    self._epoch(sigint)
                    if sigint.requested and st.epoch < self.config.epochs:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupt_message()) from None
        log = st.log
        return TrainResult(self.out_dir, log, st.best_epoch, st.best_psnr,
                           log[0]["bicubic_psnr"] if log else float("nan"),
                           _weights_of(self.trainer.model, self.config))

    def checkpoint(self):
        save_checkpoint(self.last, self.state, self.trainer.model.get_weights(),
                        self.trainer.get_state())

    def _interrupt_message(self):
        state, _, _ = load_checkpoint(self.last)
        where = f"epoch {state.epoch}" + (f", step {state.batch} of epoch {state.epoch + 1}"
                                          if state.batch else "")
        return (f"interrupted; checkpoint at {where} in {self.last}; resume with: "
                f"python train.py --resume {self.out_dir}")

    def _epoch(self, sigint):
        st, cfg = self.state, self.config
        epoch = st.epoch + 1
        start = time.time()
        rng = np.random.default_rng()
        rng.bit_generator.state = st.rng_state
        batches = iterate_minibatches(self.patches, cfg.batch_size, rng, self.memory_budget)
        total = cfg.epochs * self.steps_per_epoch
        with tqdm(total=self.steps_per_epoch, initial=st.batch, desc=f"epoch {epoch}/{cfg.epochs}",
                  unit="step", leave=False, disable=not self.progress, file=sys.stderr) as bar:
            for i, (x, y) in enumerate(batches):
                if i < st.batch:
                    continue  # resuming mid-epoch: same order, already trained on
                self.trainer.learning_rate = learning_rate_at(cfg, st.step, total)
                loss = float(self.trainer.train(x, y))
                if not math.isfinite(loss):
                    raise DivergedError(
                        f"training diverged: loss is {loss} at epoch {epoch}, step {st.step + 1} "
                        f"(learning rate {self.trainer.learning_rate:g}); last good checkpoint: "
                        f"{self.last} (epoch {st.epoch})")
                st.loss_sum += loss * len(x)
                st.loss_count += len(x)
                st.batch += 1
                st.step += 1
                bar.update()
                bar.set_postfix(loss=f"{st.loss_sum / st.loss_count:.4g}", refresh=False)
                if self.callback is not None:
                    self.callback(epoch, st.step, loss)
                if sigint.requested and st.batch < self.steps_per_epoch:
                    self.checkpoint()  # exact mid-epoch state (the last step ends the epoch)
                    return
        self._end_epoch(epoch, rng, time.time() - start)

    def _end_epoch(self, epoch, rng, seconds):
        st, cfg = self.state, self.config
        weights = _weights_of(self.trainer.model, cfg)
        val = evaluate_images(self.val_images, cfg.scale, weights, self.progress)
        row = dict(epoch=epoch, step=st.step, learning_rate=self.trainer.learning_rate,
                   train_loss=st.loss_sum / st.loss_count, **val["mean"],
                   seconds=round(seconds, 2),
                   images={r["name"]: round(r["srcnn_psnr"], 4) for r in val["images"]})
        st.epoch, st.batch, st.loss_sum, st.loss_count = epoch, 0, 0.0, 0
        st.rng_state = rng.bit_generator.state
        st.log.append(row)
        best = st.best_psnr is None or row["srcnn_psnr"] > st.best_psnr
        if best:
            st.best_epoch, st.best_psnr = epoch, row["srcnn_psnr"]
            weights.provenance = dict(
                command=st.commands[-1], commands=st.commands, epoch=epoch,
                val_psnr=row["srcnn_psnr"], val_bicubic_psnr=row["bicubic_psnr"],
                val_dir=st.val_dir, data=st.data, config=dataclasses.asdict(cfg),
                software="srcnn_theano", init_weights=st.init_weights)
            save(os.path.join(self.out_dir, "best.npz"), weights)
        self.checkpoint()
        write_logs(self.out_dir, st.log, cfg)
        if self.progress:
            tqdm.write(f"epoch {epoch:>3}/{cfg.epochs}  loss {row['train_loss']:.5g}  "
                       f"val PSNR {row['srcnn_psnr']:.2f} dB (bicubic {row['bicubic_psnr']:.2f})  "
                       f"{seconds:.0f} s{'  *best' if best else ''}", file=sys.stderr)
