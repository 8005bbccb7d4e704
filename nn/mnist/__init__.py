"""The MNIST application of the nn library: data, MNIST-100, model files, pictures, the CLI.

The core (nn.*) never imports this package; tests/test_architecture.py holds it to that.
"""
