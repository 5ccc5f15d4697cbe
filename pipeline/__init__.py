"""MNIST GAN pipeline: one module per DVC stage plus the shared pure code."""
import os

# TensorFlow's oneDNN kernels are on by default only on CPUs with AVX-512 VNNI or
# newer; elsewhere its Eigen kernels run, whose conv input gradient (also the
# forward pass of Conv2DTranspose) is several times slower (bench/train_throughput.py).
# Set before TensorFlow loads; TF_ENABLE_ONEDNN_OPTS=0 in the environment still turns
# them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
