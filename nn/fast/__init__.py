"""The CPU speed engine: the reference layers' math, made fast.

`nn.layers` and `nn.model` hold the math a learner reads; this package holds the speed tricks,
each measured on the 2-core target machine (see benchmarks/README.md):
  kernels.py  im2col views copied chunk by chunk into reused scratch buffers, the conv matmuls,
              the flipped-kernel dx, the 2x2 "pool layout" and the fused conv + ReLU + pool;
  threads.py  one worker thread per core and BLAS held at one thread meanwhile (threadpoolctl);
  layers.py   the reference layers' subclasses that use them;
  model.py    FastSequential, which plans fused passes over a model's layers and keeps the
              parameters and gradients on flat buffers;
  optim.py    FastAdam and FastAdamW: nn.optim's updates in a few passes over those buffers.
`nn.engine.build(spec, rng, engine="fast")` builds a model on it and `nn.engine.optimizer`
picks its optimisers; tests/test_fast.py holds every path to the reference.
"""

from nn.fast.model import FastSequential

__all__ = ["FastSequential"]
