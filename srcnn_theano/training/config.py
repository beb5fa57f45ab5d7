"""Training recipes: :class:`TrainConfig` and the presets the command line offers.

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
    bicubic within a couple of minutes on two cores (the demo).

This module imports neither Theano nor Lasagne.
"""
import dataclasses
import math

from srcnn_theano.errors import SRCNNError

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


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides the trained weights (besides the data).

    Attributes
    ----------
    arch : str
        Kernel sizes ``f1-f2-f3``: the paper's ``9-1-5``, ``9-3-5``, ``9-5-5``
        or any odd ones (the TPAMI ablations, e.g. ``11-1-7``).
    filters : (int, int)
        ``n1, n2``: filters of the first two layers (paper: 64, 32; the
        ablations also use 128/64 and 32/16).
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
    filters: tuple = (64, 32)
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

    def __post_init__(self):
        if isinstance(self.filters, list):  # read back from JSON
            self.filters = tuple(self.filters)

    def architecture(self):
        """The network's shape: dict ``f1, f2, f3, n1, n2`` (:func:`~srcnn_theano.network.model.parse_architecture`)."""
        from srcnn_theano.network.model import parse_architecture

        try:
            return parse_architecture(self.arch, self.filters)
        except ValueError as e:
            raise SRCNNError(str(e)) from None

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

        self.architecture()
        choices = dict(padding=PADDINGS, optimizer=OPTIMIZERS, loss=LOSSES,
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
