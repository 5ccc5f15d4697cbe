"""BentoML service for the exported MNIST GAN generator."""
