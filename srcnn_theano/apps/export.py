"""Exporting a model for use outside Theano: ONNX (the whole network) and safetensors (its weights).

Both formats hold the same network as :class:`srcnn_theano.network.inference.Predictor`
runs, for any weights the project reads (the shipped models, the project's
own runs, the authors' ``.mat`` files):

``onnx``
    The three convolutions and two ReLUs as an ONNX graph (opset
    :data:`OPSET`, IR version :data:`IR_VERSION`, so that older runtimes
    read it too). Input ``input``: float32 NCHW ``(N, C, H, W)`` in [0, 1],
    the bicubic-enlarged image (C = 1: the Y channel), any N, H and W;
    output ``output``: the same shape, not clipped. The padding is inside
    the graph, per layer: ``replicate`` (the authors' test-time rule,
    MATLAB ``imfilter(..., 'replicate')``) is a ``Pad`` node of mode
    ``edge`` before each convolution wider than 1x1; ``same`` is the
    convolution's own zero padding (``pads``).
``safetensors``
    ``conv1.weight``, ``conv1.bias``, ... ``conv3.bias``: float32, kernels in
    the layout a PyTorch ``Conv2d`` takes as it is, (out, in, f, f), applied
    by correlation (ONNX ``Conv`` and PyTorch ``Conv2d`` do not flip
    kernels either, so none is flipped).

Both carry the same metadata (strings, :func:`metadata`): ``name``,
``scale``, ``architecture`` (JSON), ``padding``, ``source`` (one line),
``provenance`` (JSON: the weights' whole record), ``input``, ``software``. ONNX keeps them in the
model's ``metadata_props``, safetensors in its header's ``__metadata__``.

onnx and safetensors are imported only here, so the rest of the library
runs without them (``pip install .[export]``).
"""
import json
import os

import numpy as np

from srcnn_theano import __version__
from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_write_bytes, check_outputs

FORMATS = ("onnx", "safetensors")
EXTENSIONS = {".onnx": "onnx", ".safetensors": "safetensors"}
PADDINGS = ("replicate", "same")
OPSET = 13  #: ONNX opset: Pad with mode 'edge', Conv, Relu; read by every current runtime
IR_VERSION = 7  #: the ONNX IR version of opset 13
LAYERS = ("conv1", "conv2", "conv3")
_KERNEL = "f1", "f2", "f3"


def _require(module):
    """Import ``module`` (onnx, safetensors.numpy), or :class:`SRCNNError` saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise SRCNNError(f"export needs the {package} package: pip install -r requirements.txt "
                         "(or pip install 'srcnn-theano[export]')") from None


def format_of(path, fmt=None):
    """The export format: ``fmt`` when given, else the one of ``path``'s extension.

    Raises
    ------
    SRCNNError
        An unknown format, or an extension that names none (without ``fmt``).
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise SRCNNError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise SRCNNError(f"cannot tell the format of {path} from its extension: name it "
                         f"{' or '.join('*' + e for e in EXTENSIONS)}, or give --format")
    return EXTENSIONS[ext]


def _check_padding(padding):
    if padding not in PADDINGS:
        raise SRCNNError(f"padding must be one of {', '.join(PADDINGS)}, not {padding!r}")


def metadata(weights, scale, padding="replicate"):
    """What an exported file says about its model: a dict of str -> str.

    Parameters
    ----------
    weights : srcnn_theano.network.weights.Weights
    scale : int or None
        The upscaling factor the weights are for (``None``: unknown, stored as ``""``).
    padding : {'replicate', 'same'}

    Returns
    -------
    dict with ``name`` (e.g. ``'SRCNN 9-1-5 x3'``), ``scale``, ``architecture``
    (JSON of f1, f2, f3, n1, n2, channels), ``padding``, ``source``
    (:func:`source_of`), ``provenance`` (JSON of the weights' whole
    provenance), ``input`` (what the network expects) and ``software``.
    """
    _check_padding(padding)
    channels = weights.architecture["channels"]
    plane = "the Y channel" if channels == 1 else f"{channels} channels"
    return {
        "name": f"SRCNN {weights.name}" + ("" if scale is None else f" x{int(scale)}"),
        "scale": "" if scale is None else str(int(scale)),
        "architecture": json.dumps(weights.architecture, sort_keys=True),
        "padding": padding,
        "source": source_of(weights),
        "provenance": json.dumps(weights.provenance, sort_keys=True),
        "input": f"float32 NCHW (N, {channels}, H, W) in [0, 1]: {plane} enlarged by MATLAB bicubic "
                 "imresize; the output has the same shape, not clipped",
        "software": f"srcnn-theano {__version__}",
    }


def source_of(weights):
    """One line on where the weights come from, from their provenance.

    The authors' models: their ``source`` and file (``9-5-5(ImageNet)/x3.mat``);
    the shipped models: their ``source``; a training run's ``best.npz``: its
    command line.
    """
    p = weights.provenance or {}
    parts = [str(p["source"])] if p.get("source") else []
    if p.get("file"):
        parts.append(str(p["file"]))
    if not parts and p.get("command"):
        parts.append(f"srcnn-theano training run: {p['command']}")
    return ", ".join(parts) or "unknown"


def torch_state(weights):
    """The weights as PyTorch ``Conv2d`` parameters: ``conv1.weight`` (n1, C, f1, f1), ``conv1.bias``, ...

    float32, C-contiguous, correlation kernels as they are (nothing flipped).
    """
    return {f"{layer}.{new}": np.ascontiguousarray(weights.arrays[f"{layer}.{old}"], dtype=np.float32)
            for layer in LAYERS for new, old in (("weight", "W"), ("bias", "b"))}


def onnx_model(weights, scale=None, padding="replicate"):
    """The network as an ``onnx.ModelProto`` (see the module docstring), checked by ``onnx.checker``.

    Parameters
    ----------
    weights : srcnn_theano.network.weights.Weights
    scale : int or None
        Recorded in the metadata.
    padding : {'replicate', 'same'}
    """
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    meta = metadata(weights, scale, padding)
    arch = weights.architecture
    channels = arch["channels"]
    state = torch_state(weights)
    nodes, inits = [], []
    x = "input"
    for i, (layer, fkey) in enumerate(zip(LAYERS, _KERNEL)):
        f = arch[fkey]
        r = f // 2
        if padding == "replicate" and r:
            pads = f"{layer}.pads"
            inits.append(numpy_helper.from_array(np.array([0, 0, r, r, 0, 0, r, r], np.int64), pads))
            nodes.append(helper.make_node("Pad", [x, pads], [f"{layer}.padded"], mode="edge",
                                          name=f"{layer}.pad"))
            x = f"{layer}.padded"
        conv_pads = [r] * 4 if padding == "same" else [0] * 4
        for key in ("weight", "bias"):
            inits.append(numpy_helper.from_array(state[f"{layer}.{key}"], f"{layer}.{key}"))
        last = i == len(LAYERS) - 1
        out = "output" if last else f"{layer}.out"
        nodes.append(helper.make_node("Conv", [x, f"{layer}.weight", f"{layer}.bias"], [out],
                                      kernel_shape=[f, f], pads=conv_pads, strides=[1, 1],
                                      dilations=[1, 1], group=1, name=layer))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"{layer}.relu"], name=f"relu{i + 1}"))
            x = f"{layer}.relu"
    shape = ["N", channels, "H", "W"]
    graph = helper.make_graph(
        nodes, "srcnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="srcnn-theano", producer_version=__version__,
                              doc_string=meta["name"] + ": " + meta["input"])
    model.ir_version = IR_VERSION
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def safetensors_bytes(weights, scale=None, padding="replicate"):
    """The safetensors file's bytes: :func:`torch_state` plus :func:`metadata`."""
    save = _require("safetensors.numpy").save
    return save(torch_state(weights), metadata=metadata(weights, scale, padding))


def export(weights, path, scale=None, fmt=None, padding="replicate", inputs=(), force=False):
    """Write ``weights`` to ``path`` as ONNX or safetensors, atomically.

    Parameters
    ----------
    weights : srcnn_theano.network.weights.Weights
    path : str
        Output file; its folder must exist.
    scale : int or None
        Recorded in the metadata (``None``: the weights' own).
    fmt : {'onnx', 'safetensors'} or None
        ``None``: from ``path``'s extension (:func:`format_of`).
    padding : {'replicate', 'same'}
        The padding the ONNX graph applies, and the one both files record.
    inputs : iterable of str
        Files read (the weights file): ``path`` is never one of them.
    force : bool
        Replace an existing ``path`` (:func:`srcnn_theano.files.check_outputs`).

    Returns
    -------
    str, the format written.
    """
    fmt = format_of(path, fmt)
    _check_padding(padding)
    check_outputs([path], inputs, force=force)
    scale = weights.scale if scale is None else int(scale)
    if fmt == "onnx":
        data = onnx_model(weights, scale, padding).SerializeToString()
    else:
        data = safetensors_bytes(weights, scale, padding)
    atomic_write_bytes(path, data, replace=force)
    return fmt
