"""A paged memory pool like LMCache's paged allocator, for the benchmarks.

One big allocation is cut into fixed-size objects, as LMCache's paged CPU
allocator does for KV-cache chunks. The memory comes from

* pinned torch memory (``torch.empty(..., dtype=torch.bfloat16,
  pin_memory=True)``) when torch with CUDA is available: what LMCache uses;
* plain torch CPU memory when only CPU torch is installed;
* numpy when torch is absent.

``PagedPool.backend`` names which: ``"torch-pinned"``, ``"torch-cpu"`` or
``"numpy"``. Objects of exactly one KV chunk's size are shaped like one,
``KV_CHUNK_SHAPE`` in bfloat16 (32 MiB); other sizes are flat bfloat16.
The whole pool is zero-filled once at creation, so that every page is
mapped before a benchmark times a transfer into it.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import torch
except ImportError:
    torch = None

# LMCache's KV chunk: (num_layers, K and V, chunk_tokens, num_kv_heads, head_size).
KV_CHUNK_SHAPE = (32, 2, 256, 8, 128)
BF16_BYTES = 2
KV_CHUNK_NBYTES = math.prod(KV_CHUNK_SHAPE) * BF16_BYTES  # 32 MiB


class PoolObject:
    """One object of the pool.

    Attributes:
        index: its place in the pool.
        view: a writable, C-contiguous uint8 numpy view of its bytes.
        address: the integer address of its first byte.
        nbytes: its size in bytes.
    """

    __slots__ = ("index", "view", "address", "nbytes")

    def __init__(self, index: int, view: np.ndarray) -> None:
        self.index = index
        self.view = view
        self.address = view.ctypes.data
        self.nbytes = view.nbytes


class PagedPool:
    """``num_objects`` objects of ``object_nbytes`` bytes each, cut from one
    zero-filled allocation.

    Attributes:
        backend: ``"torch-pinned"``, ``"torch-cpu"`` or ``"numpy"``.
        memory: the one allocation (a torch tensor or a numpy array).
        objects: the ``PoolObject`` list, in address order.

    Raises:
        ValueError: if ``object_nbytes`` is not a positive even number
            (objects hold bfloat16 values) or ``num_objects`` < 1.
    """

    def __init__(self, num_objects: int, object_nbytes: int) -> None:
        if num_objects < 1:
            raise ValueError(f"a pool needs at least one object, got {num_objects}")
        if object_nbytes <= 0 or object_nbytes % BF16_BYTES:
            raise ValueError(
                f"object size must be a positive even number of bytes, got {object_nbytes}"
            )
        if torch is None:
            self.backend = "numpy"
            self.memory = np.empty(num_objects * object_nbytes, dtype=np.uint8)
            flat = self.memory
        else:
            pinned = torch.cuda.is_available()
            self.backend = "torch-pinned" if pinned else "torch-cpu"
            shape = (KV_CHUNK_SHAPE if object_nbytes == KV_CHUNK_NBYTES
                     else (object_nbytes // BF16_BYTES,))
            self.memory = torch.empty((num_objects, *shape), dtype=torch.bfloat16,
                                      pin_memory=pinned)
            flat = self.memory.view(torch.uint8).reshape(-1).numpy()
        flat.fill(0)  # map every page now, not during a timed transfer
        self.objects = [
            PoolObject(i, flat[i * object_nbytes:(i + 1) * object_nbytes])
            for i in range(num_objects)
        ]
