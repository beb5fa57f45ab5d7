"""Training an SRCNN from an HDF5 patch file, with checkpoints, logs and exact resume.

The command line ``train.py`` is a thin layer over this module::

    from srcnn_theano import training
    cfg = training.TrainConfig.from_preset("paper", epochs=10)
    h5 = training.prepare_h5("T91/", "runs/x3", cfg)          # or an existing .h5
    result = training.train(cfg, h5, "Set5/", "runs/x3")
    result = training.resume("runs/x3")                        # after an interruption
    result = training.demo("runs/demo")                        # no data needed

Presets (:data:`PRESETS`)
-------------------------
``paper``
    The paper's recipe: 9-1-5, Gaussian initialisation (std 0.001), zero
    biases, SGD with momentum 0.9, learning rate 1e-4 with multipliers
    1/1/0.1 on the weights and 0.1 on the biases, batch 128, ``valid``
    convolutions, Caffe's Euclidean loss. The paper ran ~8e8
    back-propagations (thousands of epochs); the default here is 100 epochs,
    which ``resume(..., epochs=N)`` extends.
``fast``
    Not the paper: He initialisation, Adam at 2e-3 with a cosine schedule,
    per-pixel MSE, batch 16 (many small steps: what a CPU does best). Beats
    bicubic within a couple of minutes on two cores (:func:`demo`).

Run folder
----------
``last.npz``   checkpoint: weights, optimizer state, RNG state, position and
               log (written atomically after every epoch and on Ctrl-C).
``best.npz``   weights (:mod:`srcnn_theano.network.weights` format) with the best
               validation PSNR, with provenance (command, data hashes, epoch).
``log.csv``, ``log.json``, ``curves.png``   one row per epoch.

Exactness
---------
An epoch's minibatch order comes from a ``numpy.random.Generator`` whose
state is stored at the start of every epoch, so a run resumed from any
checkpoint (epoch boundary or the step where Ctrl-C was honoured) performs
the same floating-point operations as an uninterrupted run and ends with
byte-identical weights (on the same machine and BLAS).

Validation is the paper's: whole images, Y channel, MATLAB bicubic, scale
pixels shaved (:func:`srcnn_theano.evaluation.protocol.evaluate_image`), with the
network applied with replicate padding as the authors' test code does.
"""
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.protocol import METRICS, evaluate_image
from srcnn_theano.image.io import atomic_write_bytes, list_images, write_image
from srcnn_theano.patches.store import (DEFAULT_MEMORY_BUDGET, iterate_minibatches, load_validation_images, open_h5,
                      write_h5)

CHECKPOINT_FORMAT = 1
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("caffe", "mse")
SCHEDULES = ("constant", "cosine")
MULTIPLIERS = ("paper", "none")

PRESETS = {
    "paper": dict(arch="9-1-5", padding="valid", init_std=0.001, optimizer="sgd", learning_rate=1e-4,
                  momentum=0.9, lr_multipliers="paper", loss="caffe", schedule="constant",
                  epochs=100, batch_size=128),
    "fast": dict(arch="9-1-5", padding="valid", init_std=None, optimizer="adam", learning_rate=2e-3,
                 momentum=0.9, lr_multipliers="none", loss="mse", schedule="cosine",
                 epochs=30, batch_size=16),
}

# scikit-image photographs bundled in its wheel (no download): training / held out.
DEMO_TRAIN = ("astronaut", "coffee", "chelsea", "rocket")
DEMO_VAL = ("camera", "coins", "ihc")  # ihc: skimage.data.immunohistochemistry
DEMO_SCALE = 3
DEMO_EPOCHS = 8  # about 2 minutes on two idle cores


class DivergedError(SRCNNError):
    """The training loss became NaN or infinite; the last checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``str()`` says what was saved and how to resume."""


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

@dataclasses.dataclass
class TrainConfig:
    """Everything that decides the trained weights (besides the data).

    Attributes
    ----------
    arch : {'9-1-5', '9-3-5', '9-5-5'}
    padding : {'valid', 'same', 'replicate'}
        Of the training convolutions; ``valid`` needs labels of
        ``input - 2 * border`` pixels (21 for 33 with 9-1-5).
    scale : int
        Upscaling factor of the data and the validation.
    init_std : float or None
        Gaussian weight initialisation std; ``None`` is He initialisation.
    optimizer : {'sgd', 'adam'}
    learning_rate : float
        Base learning rate (before multipliers and schedule).
    momentum : float
        SGD momentum.
    lr_multipliers : {'paper', 'none'}
        Per-layer SGD multipliers (:data:`~srcnn_theano.network.functions.PAPER_LR_MULTIPLIERS`).
    loss : {'caffe', 'mse'}
        Caffe's Euclidean loss ``sum((F(x) - y)^2) / (2 N)`` or per-pixel MSE.
    schedule : {'constant', 'cosine'}
        Learning rate per step: constant, or ``lr * (1 + cos(pi * t / T)) / 2``.
    epochs : int
        Passes over the patch file.
    batch_size : int
        Patches per step.
    seed : int
        Seeds the weight initialisation and the minibatch order.
    """

    arch: str = "9-1-5"
    padding: str = "valid"
    scale: int = 3
    init_std: float = 0.001
    optimizer: str = "sgd"
    learning_rate: float = 1e-4
    momentum: float = 0.9
    lr_multipliers: str = "paper"
    loss: str = "caffe"
    schedule: str = "constant"
    epochs: int = 100
    batch_size: int = 128
    seed: int = 0

    @classmethod
    def from_preset(cls, name, **overrides):
        """A preset of :data:`PRESETS` with some fields replaced (``None`` values ignored).

        Choosing Adam on top of a preset with SGD multipliers drops the
        multipliers, unless ``lr_multipliers`` is given too.
        """
        if name not in PRESETS:
            raise SRCNNError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides.get("optimizer", "sgd") != "sgd" and "lr_multipliers" not in overrides:
            overrides["lr_multipliers"] = "none"
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SRCNNError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        config = cls(**{**PRESETS[name], **overrides})
        config.check()
        return config

    def check(self):
        """Raise :class:`SRCNNError` with a one-line message for any bad value."""
        from srcnn_theano.network.model import PADDINGS
        from srcnn_theano.network.model import PRESETS as ARCHS

        choices = dict(arch=tuple(ARCHS), padding=PADDINGS, optimizer=OPTIMIZERS, loss=LOSSES,
                       schedule=SCHEDULES, lr_multipliers=MULTIPLIERS)
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SRCNNError(f"{name.replace('_', ' ')} must be one of {', '.join(allowed)}, "
                                 f"not {getattr(self, name)!r}")
        positive = dict(scale=self.scale - 1, epochs=self.epochs, batch_size=self.batch_size,
                        learning_rate=self.learning_rate)
        for name, value in positive.items():
            if not value > 0 or not math.isfinite(value):
                raise SRCNNError(f"{name.replace('_', ' ')} out of range: {getattr(self, name)}")
        if self.init_std is not None and not self.init_std > 0:
            raise SRCNNError(f"init std must be positive, not {self.init_std}")
        if not 0 <= self.momentum < 1:
            raise SRCNNError(f"momentum must be in [0, 1), not {self.momentum}")
        if self.optimizer != "sgd" and self.lr_multipliers != "none":
            raise SRCNNError("learning-rate multipliers apply to sgd only")
        if self.seed < 0:
            raise SRCNNError(f"seed must be >= 0, not {self.seed}")

    def describe(self, preset=None):
        """Readable lines ``name = value``, marking values that differ from ``preset``."""
        base = PRESETS.get(preset, {})
        lines = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = "he" if f.name == "init_std" and value is None else value
            mark = "" if f.name not in base else (f"  (preset {preset})" if base[f.name] == value
                                                  else "  (changed)")
            lines.append(f"  {f.name:<15}= {shown}{mark}")
        return "\n".join(lines)


def learning_rate_at(config, step, total_steps):
    """Learning rate of step ``step`` (0-based) out of ``total_steps``."""
    if config.schedule == "cosine":
        return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return config.learning_rate


# --------------------------------------------------------------------------
# Model, compiled functions and data
# --------------------------------------------------------------------------

_TRAINERS = {}


def initial_model(config):
    """The :class:`~srcnn_theano.network.model.SRCNN` with the config's initial weights (not compiled)."""
    from srcnn_theano.network.model import SRCNN

    return SRCNN.from_preset(config.arch, padding=config.padding, init_std=config.init_std,
                             seed=config.seed)


def compiled_trainer(config):
    """A cached :class:`~srcnn_theano.network.functions.Trainer` for the config's graph.

    Compiling takes seconds to minutes, so one Trainer per (architecture,
    padding, optimizer, momentum, multipliers, loss) is kept per process.
    Its weights and optimizer state are whatever the last user left: call
    :func:`train`, which sets both, rather than using it directly.
    """
    from srcnn_theano.network.functions import PAPER_LR_MULTIPLIERS, Trainer

    key = (config.arch, config.padding, config.optimizer, config.momentum, config.lr_multipliers,
           config.loss)
    if key not in _TRAINERS:
        mult = PAPER_LR_MULTIPLIERS if config.lr_multipliers == "paper" else None
        _TRAINERS[key] = Trainer(initial_model(config), config.optimizer, config.learning_rate,
                                 config.momentum, mult, config.loss)
    return _TRAINERS[key]


def label_size(config, input_size=33):
    """Label patch side (pixels) the config's model outputs for ``input_size`` inputs."""
    return initial_model(config).output_size(input_size)


def prepare_h5(images_dir, out_dir, config, input_size=33, stride=14, force=False, progress=True):
    """Cut the patch file for ``config`` from a folder of images (with :func:`write_h5`).

    Returns
    -------
    str
        ``<out_dir>/train_x<scale>.h5``, with labels of :func:`label_size`.
        An existing file is reused (``force=False``) if :func:`open_h5` accepts it.
    """
    paths = list_images(images_dir)
    if not paths:
        raise SRCNNError(f"no images in folder: {images_dir}")
    _make_run_folder(out_dir)
    output = os.path.join(out_dir, f"train_x{config.scale}.h5")
    if os.path.exists(output) and not force:
        open_h5(output, config.scale, label_size(config, input_size), check_values=False).close()
        return output
    write_h5(output, paths, config.scale, input_size=input_size,
             label_size=label_size(config, input_size), stride=stride, seed=config.seed,
             force=True, progress=progress)
    return output


def _open_patches(path, config, model):
    """Open ``path`` with :func:`open_h5`, checked against the config's scale and model."""
    with open_h5(path, config.scale, check_values=False) as probe:
        shape = probe.data.shape
    if shape[1] != 1:
        raise SRCNNError(f"{path}: patches have {shape[1]} channels; training (and validation, "
                         "on Y as in the paper) needs Y patches (generate_h5.py --channels y)")
    if model.output_size(shape[2]) < 1:
        raise SRCNNError(f"{path}: {shape[2]}x{shape[3]} input patches are too small for "
                         f"{model.name} with {model.padding} padding")
    return open_h5(path, config.scale, label_size=model.output_size(shape[2]), check_values=True)


def _data_provenance(patches):
    """What identifies the training data: the file's attributes and source hashes."""
    attrs = patches.attrs
    info = {"file": os.path.basename(patches.path), "count": patches.count}
    for key in ("scale", "input_size", "label_size", "stride", "seed", "augment"):
        if key in attrs:
            info[key] = attrs[key].item() if hasattr(attrs[key], "item") else attrs[key]
    if "source_sha256" in attrs:
        names = [str(n) for n in attrs.get("source_names", [])]
        info["sources_sha256"] = dict(zip(names, (str(h) for h in attrs["source_sha256"])))
    else:  # not made by write_h5 (e.g. the authors' MATLAB file): hash the file itself
        info["sha256"] = _sha256_file(patches.path)
    return info


def _sha256_file(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Checkpoints, logs, plot
# --------------------------------------------------------------------------

def save_checkpoint(path, state, weights, optimizer_state):
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : str
    state : dict
        JSON-able: config, position (``epoch`` completed, ``batch`` steps
        into the next epoch, ``step`` in all), ``rng_state`` (the Generator's
        ``bit_generator.state`` at the start of epoch ``epoch + 1``), partial
        loss sums, best PSNR, the log and where the data are.
    weights : dict of str -> float32 ndarray
        As :meth:`SRCNN.get_weights`.
    optimizer_state : list of ndarray
        As :meth:`Trainer.get_state`.
    """
    arrays = {f"w:{k}": v for k, v in weights.items()}
    arrays.update({f"opt:{i}": v for i, v in enumerate(optimizer_state)})
    buf = io.BytesIO()
    np.savez(buf, state=np.array(json.dumps(dict(state, format=CHECKPOINT_FORMAT))), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path):
    """Read a checkpoint: ``(state, weights, optimizer_state)`` as :func:`save_checkpoint` takes them."""
    if not os.path.isfile(path):
        raise SRCNNError(f"no checkpoint to resume from: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            state = json.loads(str(z["state"]))
            weights = {k[2:]: z[k] for k in z.files if k.startswith("w:")}
            opt = [z[f"opt:{i}"] for i in range(sum(k.startswith("opt:") for k in z.files))]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise SRCNNError(f"not a valid checkpoint: {path} ({e})") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise SRCNNError(f"unsupported checkpoint format {state.get('format')!r}: {path}")
    return state, weights, opt


LOG_FIELDS = ("epoch", "step", "learning_rate", "train_loss", "bicubic_psnr", "srcnn_psnr",
              "bicubic_ssim", "srcnn_ssim", "seconds")


def write_logs(out_dir, log, config):
    """``log.csv``, ``log.json`` and ``curves.png`` for the epoch rows in ``log``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LOG_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(log)
    atomic_write_bytes(os.path.join(out_dir, "log.csv"), buf.getvalue().encode())
    text = json.dumps({"config": dataclasses.asdict(config), "epochs": log}, indent=1)
    atomic_write_bytes(os.path.join(out_dir, "log.json"), text.encode())
    atomic_write_bytes(os.path.join(out_dir, "curves.png"), plot_log(log, config))


def plot_log(log, config):
    """PNG bytes: training loss and validation PSNR against epochs, bicubic as a reference line.

    Uses Matplotlib's Agg canvas directly, leaving pyplot's backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in log]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r["train_loss"] for r in log], "o-", ms=3)
    ax1.set(xlabel="epoch", ylabel=f"training loss ({config.loss})", yscale="log")
    ax2.plot(epochs, [r["srcnn_psnr"] for r in log], "o-", ms=3, label=f"SRCNN {config.arch}")
    if log:
        ax2.axhline(log[0]["bicubic_psnr"], color="gray", ls="--",
                    label=f"bicubic {log[0]['bicubic_psnr']:.2f} dB")
    ax2.set(xlabel="epoch", ylabel="validation PSNR (dB)", title=f"x{config.scale}, Y channel")
    ax2.legend(loc="lower right")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _weights_of(model, config, provenance=None):
    from srcnn_theano.network.weights import Weights

    return Weights(model.get_weights(), dict(model.config), config.scale, provenance)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def validate(weights, val_images, scale, progress=False):
    """Whole-image validation with the paper's protocol (:func:`~srcnn_theano.evaluation.protocol.evaluate_image`).

    Parameters
    ----------
    weights : srcnn_theano.network.weights.Weights
    val_images : list of (str, uint8 ndarray)
        As :func:`~srcnn_theano.patches.store.load_validation_images` returns.
    scale : int

    Returns
    -------
    dict
        ``{"scale", "images": [{name, bicubic_psnr, srcnn_psnr, bicubic_ssim,
        srcnn_ssim}, ...], "mean": {...}}`` (PSNR in dB), the layout of
        :func:`~srcnn_theano.evaluation.protocol.evaluate_paths`.
    """
    from srcnn_theano.network.inference import Predictor

    predictor = Predictor(weights)
    rows = []
    for name, img in tqdm(val_images, desc="validate", unit="img", leave=False,
                          disable=not progress, file=sys.stderr):
        row = evaluate_image(img, scale, predictor, name=name)
        row.pop("images")
        rows.append(row)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
    return {"scale": int(scale), "images": rows, "mean": mean}


# --------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------

@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    run_dir : str
    log : list of dict
        One row per epoch (:data:`LOG_FIELDS`).
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


def _make_run_folder(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise SRCNNError(f"cannot create run folder {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise SRCNNError(f"run folder is not writable: {out_dir}")


RUN_FILES = ("last.npz", "best.npz", "log.csv", "log.json", "curves.png", "example.png")


def clear_run(out_dir, force):
    """Refuse to start over a run unless ``force``; then remove its files (not the data)."""
    if os.path.exists(os.path.join(out_dir, "last.npz")) and not force:
        raise SRCNNError(f"{out_dir} already holds a run: resume it (--resume {out_dir}) "
                         "or start over (--force)")
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            os.remove(path)


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


def train(config, train_h5, val_dir, out_dir, *, force=False, command=None, progress=True,
          memory_budget=DEFAULT_MEMORY_BUDGET, callback=None, init_weights=None, _resume_from=None):
    """Train from an HDF5 patch file, validating on whole images after each epoch.

    Parameters
    ----------
    config : TrainConfig
    train_h5 : str
        Patch file (:func:`prepare_h5`, ``data_prep/generate_h5.py`` or the
        authors' MATLAB code); its scale and label size must suit ``config``.
    val_dir : str
        Folder of whole validation images (8-bit), e.g. Set5.
    out_dir : str
        Run folder (see the module docstring); created if missing.
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
        Bad data or options. :class:`DivergedError` when the loss is not finite.
    TrainingInterrupted
        On Ctrl-C, after saving what can be resumed exactly.
    """
    config.check()
    _make_run_folder(out_dir)
    if _resume_from is None:
        clear_run(out_dir, force)
    val_images = load_validation_images(val_dir)
    model = initial_model(config)
    with _open_patches(train_h5, config, model) as patches:
        if _resume_from is None:
            state = dict(config=dataclasses.asdict(config), epoch=0, batch=0, step=0,
                         rng_state=np.random.default_rng(config.seed).bit_generator.state,
                         loss_sum=0.0, loss_count=0, best_epoch=0, best_psnr=None, log=[],
                         train_h5=os.path.abspath(train_h5), val_dir=os.path.abspath(val_dir),
                         data=_data_provenance(patches), commands=[command or "training.train()"],
                         init_weights=_init_provenance(init_weights))
            weights, opt = model.get_weights(), None
            if init_weights is not None:
                weights = _load_init_weights(init_weights, config)
        else:
            state, weights, opt = _resume_from
            state["commands"].append(command or "training.resume()")
        trainer = compiled_trainer(config)
        trainer.model.set_weights(weights)
        trainer.set_state(opt if opt is not None else
                          [np.zeros_like(a) for a in trainer.get_state()])
        loop = _Loop(config, trainer, patches, val_images, out_dir, state, memory_budget,
                     progress, callback)
        if _resume_from is None:
            loop.checkpoint()
        loop.run()
    log = state["log"]
    return TrainResult(out_dir, log, state["best_epoch"], state["best_psnr"],
                       log[0]["bicubic_psnr"] if log else float("nan"),
                       _weights_of(trainer.model, config))


def _load_init_weights(path, config):
    """Arrays of a weights file to start from; its architecture must be the config's."""
    from srcnn_theano.network.weights import load

    w = load(path)
    if w.name != config.arch or w.architecture["channels"] != 1:
        raise SRCNNError(f"--init-weights {path} is a {w.name} model; this run trains {config.arch}")
    return w.arrays


def _init_provenance(path):
    if path is None:
        return None
    return {"file": os.path.abspath(path), "sha256": _sha256_file(path)}


class _Loop:
    """The epochs of :func:`train`; ``state`` is the checkpoint's JSON, updated in place."""

    def __init__(self, config, trainer, patches, val_images, out_dir, state, memory_budget,
                 progress, callback):
        self.config, self.trainer, self.patches = config, trainer, patches
        self.val_images, self.out_dir, self.state = val_images, out_dir, state
        self.memory_budget, self.progress, self.callback = memory_budget, progress, callback
        self.steps_per_epoch = -(-patches.count // config.batch_size)
        self.last = os.path.join(out_dir, "last.npz")

    def checkpoint(self):
        save_checkpoint(self.last, self.state, self.trainer.model.get_weights(),
                        self.trainer.get_state())

    def run(self):
        st = self.state
        try:
            with _SigintDeferred() as sigint:
                while st["epoch"] < self.config.epochs:
                    self._epoch(sigint)
                    if sigint.requested and st["epoch"] < self.config.epochs:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupt_message()) from None

    def _interrupt_message(self):
        state, _, _ = load_checkpoint(self.last)
        where = f"epoch {state['epoch']}" + (f", step {state['batch']} of epoch {state['epoch'] + 1}"
                                             if state["batch"] else "")
        return (f"interrupted; checkpoint at {where} in {self.last}; resume with: "
                f"python train.py --resume {self.out_dir}")

    def _epoch(self, sigint):
        st, cfg = self.state, self.config
        epoch = st["epoch"] + 1
        start = time.time()
        rng = np.random.default_rng()
        rng.bit_generator.state = st["rng_state"]
        batches = iterate_minibatches(self.patches, cfg.batch_size, rng, self.memory_budget)
        total = cfg.epochs * self.steps_per_epoch
        with tqdm(total=self.steps_per_epoch, initial=st["batch"], desc=f"epoch {epoch}/{cfg.epochs}",
                  unit="step", leave=False, disable=not self.progress, file=sys.stderr) as bar:
            for i, (x, y) in enumerate(batches):
                if i < st["batch"]:
                    continue  # resuming mid-epoch: same order, already trained on
                self.trainer.learning_rate = learning_rate_at(cfg, st["step"], total)
                loss = float(self.trainer.train(x, y))
                if not math.isfinite(loss):
                    raise DivergedError(
                        f"training diverged: loss is {loss} at epoch {epoch}, step {st['step'] + 1} "
                        f"(learning rate {self.trainer.learning_rate:g}); last good checkpoint: "
                        f"{self.last} (epoch {st['epoch']})")
                st["loss_sum"] += loss * len(x)
                st["loss_count"] += len(x)
                st["batch"] += 1
                st["step"] += 1
                bar.update()
                bar.set_postfix(loss=f"{st['loss_sum'] / st['loss_count']:.4g}", refresh=False)
                if self.callback is not None:
                    self.callback(epoch, st["step"], loss)
                if sigint.requested and st["batch"] < self.steps_per_epoch:
                    self.checkpoint()  # exact mid-epoch state (the last step ends the epoch)
                    return
        self._end_epoch(epoch, rng, time.time() - start)

    def _end_epoch(self, epoch, rng, seconds):
        st, cfg = self.state, self.config
        weights = _weights_of(self.trainer.model, cfg)
        val = validate(weights, self.val_images, cfg.scale, self.progress)
        row = dict(epoch=epoch, step=st["step"], learning_rate=self.trainer.learning_rate,
                   train_loss=st["loss_sum"] / st["loss_count"], **val["mean"],
                   seconds=round(seconds, 2),
                   images={r["name"]: round(r["srcnn_psnr"], 4) for r in val["images"]})
        st.update(epoch=epoch, batch=0, loss_sum=0.0, loss_count=0, rng_state=rng.bit_generator.state)
        st["log"].append(row)
        best = st["best_psnr"] is None or row["srcnn_psnr"] > st["best_psnr"]
        if best:
            st.update(best_epoch=epoch, best_psnr=row["srcnn_psnr"])
            weights.provenance = dict(
                command=st["commands"][-1], commands=st["commands"], epoch=epoch,
                val_psnr=row["srcnn_psnr"], val_bicubic_psnr=row["bicubic_psnr"],
                val_dir=st["val_dir"], data=st["data"], config=st["config"], software="srcnn_theano",
                init_weights=st.get("init_weights"))
            from srcnn_theano.network.weights import save

            save(os.path.join(self.out_dir, "best.npz"), weights)
        self.checkpoint()
        write_logs(self.out_dir, st["log"], cfg)
        if self.progress:
            tqdm.write(f"epoch {epoch:>3}/{cfg.epochs}  loss {row['train_loss']:.5g}  "
                       f"val PSNR {row['srcnn_psnr']:.2f} dB (bicubic {row['bicubic_psnr']:.2f})  "
                       f"{seconds:.0f} s{'  *best' if best else ''}", file=sys.stderr)


def resume(run_dir, epochs=None, command=None, progress=True, memory_budget=DEFAULT_MEMORY_BUDGET,
           callback=None):
    """Continue the run in ``run_dir`` from its ``last.npz`` checkpoint.

    ``epochs`` raises the total number of epochs (the result equals a run
    started with that many epochs, except that a cosine schedule is
    stretched from the resume point on).
    """
    state, weights, opt = load_checkpoint(os.path.join(run_dir, "last.npz"))
    config = TrainConfig(**state["config"])
    if epochs is not None:
        if epochs < state["epoch"]:
            raise SRCNNError(f"--epochs {epochs} is fewer than the {state['epoch']} already done")
        config.epochs = epochs
        state["config"] = dataclasses.asdict(config)
    for key, what in (("train_h5", "training file"), ("val_dir", "validation folder")):
        if not os.path.exists(state[key]):
            raise SRCNNError(f"the run's {what} is gone: {state[key]}")
    return train(config, state["train_h5"], state["val_dir"], run_dir, command=command,
                 progress=progress, memory_budget=memory_budget, callback=callback,
                 _resume_from=(state, weights, opt))


# --------------------------------------------------------------------------
# The demo: scikit-image's bundled photographs
# --------------------------------------------------------------------------

def write_demo_images(folder):
    """Save the bundled scikit-image photographs as PNG.

    Returns
    -------
    (train_dir, val_dir) : str
        ``folder/train`` (:data:`DEMO_TRAIN`) and ``folder/val`` (:data:`DEMO_VAL`).
    """
    import skimage.data

    dirs = []
    for sub, names in (("train", DEMO_TRAIN), ("val", DEMO_VAL)):
        path = os.path.join(folder, sub)
        os.makedirs(path, exist_ok=True)
        for name in names:
            loader = getattr(skimage.data, "immunohistochemistry" if name == "ihc" else name)
            write_image(os.path.join(path, f"{name}.png"), loader())
        dirs.append(path)
    return tuple(dirs)


def demo(out_dir="runs/demo", epochs=DEMO_EPOCHS, stride=14, command=None, progress=True,
         callback=None):
    """Train the ``fast`` recipe on bundled photographs, x3, and compare with bicubic.

    Writes the images, ``train_x3.h5``, the usual run files and
    ``example.png`` (:func:`srcnn_theano.apps.figure.save_comparison` on the first
    held-out photograph) into ``out_dir``, starting over there.

    Returns
    -------
    (TrainResult, dict)
        The run, and the :func:`validate` report of ``best.npz`` on the
        held-out photographs (:func:`srcnn_theano.evaluation.protocol.format_table` prints it).
    """
    from srcnn_theano.apps.figure import save_comparison
    from srcnn_theano.network.inference import Predictor
    from srcnn_theano.network.weights import load

    config = TrainConfig.from_preset("fast", epochs=epochs, scale=DEMO_SCALE)
    _make_run_folder(out_dir)
    train_dir, val_dir = write_demo_images(os.path.join(out_dir, "images"))
    h5 = prepare_h5(train_dir, out_dir, config, stride=stride, force=True, progress=progress)
    result = train(config, h5, val_dir, out_dir, force=True, command=command, progress=progress,
                   callback=callback)
    best = load(os.path.join(out_dir, "best.npz"))
    held_out = load_validation_images(val_dir)
    name, image = held_out[0]
    save_comparison(os.path.join(out_dir, "example.png"), image, DEMO_SCALE, Predictor(best), name)
    return result, validate(best, held_out, DEMO_SCALE)
