"""Setting up a GPU process of srcnn-theano, and checking it against the CPU.

Tooling run from the repository's root (``python -m gpu_setup.env``, ``bash
gpu_setup/check.sh``), not part of the installed library: the library's GPU
part (the cuDNN >= 8 patch, the flags) is :mod:`srcnn_theano.gpu`;
docs/gpu.md says how the two fit together.

Modules::

    env         a GPU process's environment: CUDA library links, Debian's pygpu, the exports
    check       SRCNN on the GPU against the CPU: same results, and how much faster
"""
