"""The demo (``python train.py`` with no data): the ``fast`` recipe on scikit-image's bundled photographs."""
import os

from srcnn_theano.apps.figure import save_comparison
from srcnn_theano.evaluation.datasets import load_ground_truth, write_skimage_photos
from srcnn_theano.evaluation.protocol import evaluate_images
from srcnn_theano.network.inference import Predictor
from srcnn_theano.network.weights import load
from srcnn_theano.training import TrainConfig, prepare_h5, train
from srcnn_theano.training.checkpoint import hold_run

DEMO_SCALE = 3
DEMO_EPOCHS = 8  # about 2 minutes on two idle cores


def demo(out_dir="runs/demo", epochs=DEMO_EPOCHS, stride=14, command=None, progress=True,
         callback=None):
    """Train the ``fast`` recipe on bundled photographs, x3, and compare with bicubic.

    Writes the images (:func:`~srcnn_theano.evaluation.datasets.write_skimage_photos`),
    ``train_x3.h5``, the usual run files and ``example.png``
    (:func:`srcnn_theano.apps.figure.save_comparison` on the first held-out
    photograph) into ``out_dir``, starting over there; the folder is held
    by this process meanwhile (:func:`~srcnn_theano.training.checkpoint.hold_run`).

    Returns
    -------
    (TrainResult, dict)
        The run, and the :func:`~srcnn_theano.evaluation.protocol.evaluate_images`
        report of ``best.npz`` on the held-out photographs
        (:func:`~srcnn_theano.evaluation.protocol.format_table` prints it).
    """

    config = TrainConfig.from_preset("fast", epochs=epochs, scale=DEMO_SCALE)
    with hold_run(out_dir):
        return _demo(config, out_dir, epochs, stride, command, progress, callback)


def _demo(config, out_dir, epochs, stride, command, progress, callback):
    train_dir, val_dir = write_skimage_photos(os.path.join(out_dir, "images"))
    h5 = prepare_h5(train_dir, out_dir, config, stride=stride, force=True, progress=progress)
    result = train(config, h5, val_dir, out_dir, force=True, command=command, progress=progress,
                   callback=callback)
    best = load(os.path.join(out_dir, "best.npz"))
    held_out = load_ground_truth(val_dir)
    name, image = held_out[0]
    save_comparison(os.path.join(out_dir, "example.png"), image, DEMO_SCALE, Predictor(best), name)
    return result, evaluate_images(held_out, DEMO_SCALE, best)
