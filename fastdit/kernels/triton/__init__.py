"""Block-sparse FlashAttention in Triton: ``forward.py`` (online softmax over a layout's CSR rows, pooled pyramid
levels included), ``backward.py`` (dQ and dK/dV kernels for level-0 layouts), ``pooling.py`` (pooled K/V of
pyramid levels), ``autograd.py`` (the two as one differentiable function) and ``env.py`` (interpreter and
Hopper flags). Importing this package does not import Triton; its modules do."""
