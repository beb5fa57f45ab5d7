from srcnn_theano.training.loop import *  # noqa
from srcnn_theano.training.loop import _TRAINERS  # noqa
