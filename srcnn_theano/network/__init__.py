"""The network: Lasagne layers, compiled Theano functions, weights files, whole-image inference."""
