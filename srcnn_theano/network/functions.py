"""Compiled Theano functions for an :class:`~srcnn_theano.network.model.SRCNN`.

``predict(x)``
    x: (N, C, H, W) float32 in [0, 1] -> (N, C, H', W') float32, where
    H' = H for ``same``/``replicate`` padding and H - 2 * border for ``valid``.
``train(x, y)`` / ``val(x, y)``
    x: (N, C, h, w) inputs, y: (N, C, h', w') labels (float32, [0, 1]);
    both return the loss (float); ``train`` also applies one update.

Losses
------
``'mse'``   mean over every pixel: ``mean((F(x) - y)^2)``.
``'caffe'`` Caffe's EuclideanLoss the paper trained with:
            ``sum((F(x) - y)^2) / (2 N)``, i.e. per patch, not per pixel.
            The paper's learning rates (1e-4, 1e-5) only make sense with it.

Optimizers
----------
``'sgd'``  Caffe SGD with momentum: ``v <- m v - lr * mult * g; p <- p + v``
           with a per-parameter learning-rate multiplier (paper: 1, 1, 0.1
           on W1, W2, W3 and 0.1 on every bias).
``'adam'`` Lasagne's Adam (same multipliers not applied).
"""
from collections import OrderedDict

import numpy as np

from srcnn_theano.backend import T, lasagne, theano
from srcnn_theano.network import cache  # noqa: F401  (stable Theano cache keys before any compile)

PAPER_LR_MULTIPLIERS = {"conv1.W": 1.0, "conv2.W": 1.0, "conv3.W": 0.1,
                        "conv1.b": 0.1, "conv2.b": 0.1, "conv3.b": 0.1}


def compile_predict(model):
    """Theano function (N, C, H, W) float32 -> network output (float32)."""
    out = model.get_output(deterministic=True)
    return theano.function([model.input_var], out, name="srcnn_predict")


def loss_expression(prediction, target, kind="mse"):
    """Symbolic loss for ``prediction`` and ``target`` of the same shape."""
    if kind == "mse":
        return T.mean(T.sqr(prediction - target))
    if kind == "caffe":
        return T.sum(T.sqr(prediction - target)) / (2.0 * prediction.shape[0])
    raise ValueError(f"unknown loss {kind!r}: use 'mse' or 'caffe'")


def _param_key(model, param):
    for layer in model.layers:
        for pname in ("W", "b"):
            if getattr(layer, pname) is param:
                return f"{layer.name}.{pname}"
    raise KeyError(param)


class Trainer:
    """The compiled ``train`` and ``val`` functions and the optimizer's state.

    Parameters
    ----------
    model : SRCNN
    optimizer : {'sgd', 'adam'}
    learning_rate : float
        Base learning rate; change it later with :attr:`learning_rate`.
    momentum : float
        For ``sgd``.
    lr_multipliers : dict or None
        Per-parameter multipliers for ``sgd`` keyed ``conv1.W`` ...; ``None``
        means 1 everywhere. :data:`PAPER_LR_MULTIPLIERS` is the paper's.
    loss : {'mse', 'caffe'}
    """

    def __init__(self, model, optimizer="sgd", learning_rate=1e-4, momentum=0.9,
                 lr_multipliers=None, loss="mse"):
        self.model = model
        self.lr = theano.shared(np.float32(learning_rate), name="learning_rate")
        target = T.tensor4("hr_label")
        pred = model.get_output()
        loss_expr = loss_expression(pred, target, loss)
        params = model.params
        if optimizer == "sgd":
            updates = self._sgd(model, loss_expr, params, momentum, lr_multipliers or {})
        elif optimizer == "adam":
            updates = lasagne.updates.adam(loss_expr, params, learning_rate=self.lr)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}: use 'sgd' or 'adam'")
        self.state_vars = [v for v in updates if v not in params]
        self.train = theano.function([model.input_var, target], loss_expr, updates=updates,
                                     name="srcnn_train")
        self.val = theano.function([model.input_var, target], loss_expr, name="srcnn_val")

    def _sgd(self, model, loss_expr, params, momentum, multipliers):
        grads = theano.grad(loss_expr, params)
        updates = OrderedDict()  # what theano.function expects (a dict makes it warn)
        for p, g in zip(params, grads):
            mult = np.float32(multipliers.get(_param_key(model, p), 1.0))
            v = theano.shared(np.zeros(p.get_value(borrow=True).shape, dtype="float32"),
                              name=f"velocity_{_param_key(model, p)}")
            v_new = np.float32(momentum) * v - self.lr * mult * g
            updates[v] = v_new
            updates[p] = p + v_new
        return updates

    @property
    def learning_rate(self):
        return float(self.lr.get_value())

    @learning_rate.setter
    def learning_rate(self, value):
        self.lr.set_value(np.float32(value))

    def get_state(self):
        """Optimizer state (momentum buffers, Adam moments and step) as a list of arrays."""
        return [v.get_value() for v in self.state_vars]

    def set_state(self, arrays):
        if len(arrays) != len(self.state_vars):
            raise ValueError("optimizer state does not match this optimizer")
        for v, a in zip(self.state_vars, arrays):
            v.set_value(np.asarray(a, dtype=v.dtype))
