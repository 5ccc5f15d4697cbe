"""MNIST GAN pipeline: one module per DVC stage plus the shared pure code."""
