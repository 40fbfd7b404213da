"""Triton kernels for the design space's hot ops, each file a torch reference, the
`@triton.jit` kernel and its host wrapper (read top to bottom).

Import the kernel modules themselves (`tnas.kernels.int8_matmul`, ...): they import Triton,
which `tnas.nn` only does on CUDA.
"""
