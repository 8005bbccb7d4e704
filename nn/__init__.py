"""nn: neural networks from scratch in NumPy.

The reference layers (nn.layers, run by nn.model.Sequential) are the textbook math; the engines
(nn.fast on the CPU, nn.gpu on CuPy) make the same math fast. Losses, optimisers, schedules, the
training loop (nn.train) and safe files (nn.files) complete the core, which never imports the
MNIST application (nn.mnist). Start reading at nn/layers.py.
"""
