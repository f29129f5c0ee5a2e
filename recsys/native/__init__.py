"""Hot loops in C, built on first use with the system C compiler and loaded with ctypes.

- ``block_grads`` (``ncf_block_grads.c``): the per-block NCF gradient pass of ``recsys.models.ncf.blocked_bce_grads``;
- ``mine_rows`` (``mine_rows.c``): A-hum's hard-user mining, a few dozen gradient steps on a few user vectors,
  which in torch ops is hundreds of tiny calls;
- ``add_rows``, ``segment_square_sums`` and ``range_sums`` (``row_sums.c``): ``index_add_`` over rows without torch's
  index sort, the squared norms of segments of rows (the server's per-client upload norms), and sums over a range of
  each row (the trimmed mean's kept ranks);
- ``group_rows`` (``group_rows.c``): a round's uploaded item rows scattered into padded per-row groups, for the
  grouped aggregation rules of ``defenses.federated.base``;
- ``top_rows`` (``top_rows.c``): the sorted top entries of every row of a score matrix, for ``recsys.metrics``
  (a compiled Amazon evaluation spent about 45 % of its CPU time in ``torch.topk``).

In torch ops ``blocked_bce_grads`` makes some twenty memory-bound passes over a round's samples (gathers, adds,
ReLU masks, narrow matmuls of width 8); the kernel does the forward and backward pass of a block of ``BLOCK``
samples in registers and L1 cache. ``torch.compile`` was tried first: for this graph (about 150 per-block sums)
inductor re-computes the forward pass in each of its reduction loops and was 1.6x slower than eager torch.

The shared library is compiled once per machine (``$CC``, else ``cc``; under a second) into ``$FEDREC_CACHE_DIR``
(default ``~/.cache/fedrec-sim``), keyed by the sources, the flags and the CPU. Where no compiler works, or with
``FEDREC_NATIVE=0``, callers use torch ops, which give the same results up to float rounding (gradients) or
exactly (row sums, top entries without ties) (``tests/test_native_kernel.py``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from recsys.atomic import atomic_path

log = logging.getLogger("fedrec.recsys")

SOURCES = [Path(__file__).with_name(name) for name in ("ncf_block_grads.c", "row_sums.c", "top_rows.c",
                                                        "mine_rows.c", "group_rows.c")]
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd", "-shared", "-fPIC")
OPTIONAL_FLAGS = (("-fopenmp", "-DVECTOR_MATH", "-lmvec"), ("-fopenmp",), ())  # tried in this order: OpenMP
# threads (libgomp.so.1, resolved to the copy torch has loaded), glibc's vector expf/log1pf
BLOCK = 64  # CHUNK in the C source

_library: ctypes.CDLL | None | bool = None  # False once building or loading has failed


def _cpu_id() -> str:
    """What the compiled code depends on: the machine and, on Linux, the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return platform.machine() + "".join([line for line in lines if line.startswith(("model name", "flags"))][:2])
    except OSError:
        return platform.machine() + platform.processor()


def _build() -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (set $CC)")
    source = b"".join(path.read_bytes() for path in SOURCES)
    key = hashlib.sha256(source + " ".join((compiler, *FLAGS, str(OPTIONAL_FLAGS), _cpu_id())).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("FEDREC_CACHE_DIR") or Path.home() / ".cache" / "fedrec-sim")
    target = cache / f"fedrec-native-{key}.so"
    if not target.exists():
        with atomic_path(target) as tmp:
            for optional in OPTIONAL_FLAGS:
                built = subprocess.run([compiler, *FLAGS, "-o", str(tmp), *map(str, SOURCES), *optional, "-lm"],
                                       capture_output=True, text=True)
                if built.returncode == 0:
                    break
            built.check_returncode()
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they are disabled or cannot be built (logged once)."""
    global _library
    if _library is None:
        if os.environ.get("FEDREC_NATIVE", "1") == "0":
            _library = False
        else:
            try:
                lib = ctypes.CDLL(str(_build()))
                lib.ncf_block_grads.restype = ctypes.c_int
                lib.ncf_block_grads.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p] + [
                    ctypes.c_int64] * 4 + [ctypes.c_void_p] * 13
                lib.top_rows.restype = None
                lib.top_rows.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] + [ctypes.c_int64] * 2 + [
                    ctypes.c_void_p] * 2
                lib.mine_rows.restype = ctypes.c_int
                lib.mine_rows.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                          ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_float, ctypes.c_int64, ctypes.c_void_p]
                lib.segment_square_sums.restype = None
                lib.segment_square_sums.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                                    ctypes.c_void_p]
                lib.add_rows.restype = ctypes.c_int
                lib.add_rows.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                             ctypes.c_void_p, ctypes.c_void_p]
                lib.group_rows.restype = ctypes.c_int
                lib.group_rows.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                           ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                           ctypes.c_int64] + [ctypes.c_void_p] * 3
                lib.range_sums.restype = ctypes.c_int
                lib.range_sums.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 4
                _library = lib
            except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
                detail = getattr(error, "stderr", "") or error
                log.warning("native kernels unavailable (%s); using torch ops instead", detail)
                _library = False
    return _library or None


def _pointer(tensor: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr() if tensor is not None else None)


def _ints(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.int64).contiguous()  # the C side reads int64; no copy when it already is


def _floats(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float32).contiguous()


def _mlp(first_width: int, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The C side's description of the layers after the first: widths (the first layer's, then each layer's
    output) and every W_k then b_k, flattened."""
    widths = torch.tensor([first_width, *(weight.shape[0] for weight, _ in layers)], dtype=torch.int64)
    return widths, _floats(torch.cat([t.reshape(-1) for pair in layers for t in pair]))


def _loaded() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError("the native kernels are not available (no C compiler, or FEDREC_NATIVE=0)")
    return lib


def supports(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can take these tensors (float32, on the CPU) and are available."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and library() is not None


def block_grads(items: torch.Tensor, owner: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                sample_row: torch.Tensor, num_touched: int, item_part: torch.Tensor, row_part: torch.Tensor,
                item_emb: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]], row_sums: bool,
                block_client: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per block of ``BLOCK`` samples: the weighted BCE loss ``[nb]`` and the gradients ``[nb, P]`` (for each
    ``(W_k, b_k)`` of ``layers``, W_k then b_k, flattened; then the first layer's bias and item weight ``W_q``
    ``[h0, d]``: the columns of ``recsys.models.ncf._gradient_columns``); with δ_s = ∂L/∂(first layer's output)
    of sample s, Σ δ_s per touched row (``sample_row``, ``[num_touched, h0]``) and, if ``row_sums``, per row
    (``owner``, ``[R, h0]``).

    ``item_part[i] = W_q q_i``, ``row_part[r] = W_p p_r + b0``; sample s is (row ``owner[s]``, item ``items[s]``).
    With torch's intra-op thread count above 1, ranges of blocks run in parallel (OpenMP, torch's runtime), split
    where ``block_client`` (ascending) changes: a client's rows are written by one thread, in sample order, so the
    result does not depend on the thread count.
    """
    lib = _loaded()
    num_samples, (num_items, h0), dim = len(items), item_part.shape, item_emb.shape[1]
    if num_samples % BLOCK:
        raise ValueError(f"{num_samples} samples are not whole blocks of {BLOCK}")
    if item_emb.shape[0] != num_items or row_part.shape[1] != h0:
        raise ValueError(f"item_part {tuple(item_part.shape)}, row_part {tuple(row_part.shape)} and item_emb "
                         f"{tuple(item_emb.shape)} do not match")
    widths, params = _mlp(h0, layers)
    per_block = sum(w.numel() + b.numel() for w, b in layers) + h0 * (1 + dim)
    num_blocks = num_samples // BLOCK
    losses, grads = torch.empty(num_blocks), torch.empty((num_blocks, per_block))
    touched, rows = torch.zeros((num_touched, h0)), torch.zeros((len(row_part), h0)) if row_sums else None
    inputs = [*map(_ints, (items, owner)), *map(_floats, (labels, weights)), _ints(sample_row),
              *map(_floats, (item_part, row_part, item_emb))]
    bounds = torch.tensor(_client_ranges(block_client, torch.get_num_threads()), dtype=torch.int64)
    _check(lib.ncf_block_grads(len(bounds) - 1, _pointer(bounds), len(layers), _pointer(widths), dim, num_items,
                               len(row_part), num_touched, *map(_pointer, inputs), _pointer(params), _pointer(losses),
                               _pointer(grads), _pointer(touched), _pointer(rows)),
           f"items (0..{num_items - 1}), owner (0..{len(row_part) - 1}) or sample_row (0..{num_touched - 1})")
    return losses, grads, touched, rows


MIN_BLOCKS_PER_THREAD = 256


def _client_ranges(block_client: torch.Tensor, threads: int) -> list[int]:
    """Block boundaries ``[0, ..., num_blocks]`` of at most ``threads`` ranges of about equal size (at least
    ``MIN_BLOCKS_PER_THREAD`` blocks each), each starting at a client's first block."""
    num_blocks = len(block_client)
    parts = max(1, min(threads, num_blocks // MIN_BLOCKS_PER_THREAD))
    targets = block_client[torch.arange(1, parts) * num_blocks // parts]
    starts = torch.searchsorted(block_client, targets).tolist()
    return sorted({0, *starts, num_blocks})


def add_rows(out: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out.index_add_(0, index, values)`` (the same additions in the same order) for contiguous float32 CPU
    tensors; raises IndexError, leaving ``out`` unchanged, if an index is out of range."""
    lib = _loaded()
    width = out[0].numel() if len(out) else 0
    if (values.shape[1:] != out.shape[1:] or len(index) != len(values) or not out.is_contiguous()
            or not supports(out, values)):
        raise ValueError(f"cannot add rows {tuple(values.shape)} at {tuple(index.shape)} to {tuple(out.shape)}")
    index, values = _ints(index), values.contiguous()
    _check(lib.add_rows(len(index), width, _pointer(index), len(out), _pointer(values), _pointer(out)),
           f"index (0..{len(out) - 1})")
    return out


class Buffers:
    """Output memory reused from call to call: a fresh multi-megabyte tensor costs its page faults, about half as
    much as ``group_rows``'s own work. A call's outputs are overwritten by the next call that takes the same buffers."""

    def __init__(self) -> None:
        self._memory: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An uninitialised ``shape`` tensor in the memory kept under ``name`` (grown by a quarter when too small)."""
        numel = math.prod(shape)
        memory = self._memory.get(name)
        if memory is None or memory.dtype != dtype or memory.numel() < numel:
            memory = self._memory[name] = torch.empty(numel + numel // 4, dtype=dtype)
        return memory[:numel].view(shape)


def group_rows(items: torch.Tensor, values: torch.Tensor, flags: torch.Tensor | None, first: torch.Tensor,
               size: torch.Tensor, slots: int, columns: bool,
               buffers: Buffers | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Entries (``items`` [E], float32 CPU ``values`` [E, D], bool ``flags`` [E]) scattered into per-row groups: row
    j's group is slots ``first[j] .. first[j] + size[j] − 1`` (``first[j] < 0``: no group; the groups tile the
    ``slots``), and entry e is upload k of its row, k = its rank among the row's entries in entry order. Returns, in
    ``buffers`` if given: unless ``flags`` is None, the slots' values ``[slots, D]`` and flags ``[slots]`` (zero where
    unfilled); if ``columns``, the values with each group laid out ``[D, size]`` (+inf where unfilled), flat
    ``[slots * D]``."""
    lib = _loaded()
    num_items, width = len(first), values.shape[1]
    if (not supports(values) or len(items) != len(values) or len(size) != num_items
            or flags is not None and len(flags) != len(values)):
        raise ValueError(f"cannot group {tuple(values.shape)} {values.dtype} values by {tuple(items.shape)} items "
                         f"into {num_items} rows")
    buffers = buffers or Buffers()
    out = None if flags is None else buffers.take("values", (slots, width))
    out_flags = None if flags is None else buffers.take("flags", (slots,), torch.bool)
    out_columns = buffers.take("columns", (slots * width,)) if columns else None
    inputs = [_ints(items), values.contiguous(), None if flags is None else flags.to(torch.bool).contiguous(),
              _ints(first), _ints(size)]
    _check(lib.group_rows(len(items), width, *map(_pointer, inputs[:3]), num_items, *map(_pointer, inputs[3:]),
                          slots, _pointer(out), _pointer(out_columns), _pointer(out_flags)),
           f"items (0..{num_items - 1}, each in a group with a slot for each of its entries)",
           f"groups (first, size) that do not tile the {slots} slots")
    return out, out_flags, out_columns


def range_sums(rows: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``[G, D]``: ``rows[g, c, low[g]:high[g]].sum()`` for float32 CPU ``rows`` ``[G, D, N]``, each sum in index
    order (for sorted rows: a sum over ranks)."""
    lib = _loaded()
    num_groups, width, size = rows.shape
    if not supports(rows) or not len(low) == len(high) == num_groups:
        raise ValueError(f"range sums of {tuple(rows.shape)} {rows.dtype} rows with {len(low)} ranges")
    out, inputs = torch.empty((num_groups, width)), [rows.contiguous(), _ints(low), _ints(high)]
    _check(lib.range_sums(num_groups * width, width, size, *map(_pointer, inputs), _pointer(out)),
           f"ranges (0 <= low <= high <= {size})")
    return out


def mine_rows(rows: torch.Tensor, item_part: torch.Tensor, user_weight: torch.Tensor,
              layers: list[tuple[torch.Tensor, torch.Tensor]], step: float, iterations: int) -> torch.Tensor:
    """``iterations`` steps p ← p − step · ∂l/∂p with l(p) = −log(1 − Υ(p, q_r)) for each row r of ``rows``
    (float32 CPU, ``[R, d]``), where ``item_part[r] = W_q q_r + b0`` and ``user_weight`` is W_p; a new tensor."""
    lib = _loaded()
    if not supports(rows, item_part, user_weight) or item_part.shape != (len(rows), user_weight.shape[0]):
        raise ValueError(f"rows {tuple(rows.shape)}, item_part {tuple(item_part.shape)} and W_p "
                         f"{tuple(user_weight.shape)} do not match")
    out = rows.contiguous().clone()
    widths, params = _mlp(user_weight.shape[0], layers)
    weight, item_part = user_weight.contiguous(), item_part.contiguous()
    _check(lib.mine_rows(len(out), len(layers), _pointer(widths), out.shape[1], _pointer(weight), weight.shape[1],
                         _pointer(item_part), _pointer(params), step, iterations, _pointer(out)), "")
    return out


def segment_square_sums(values: torch.Tensor, indptr: torch.Tensor) -> torch.Tensor:
    """Σ of the squared entries of each segment ``values[indptr[c]:indptr[c + 1]]`` (rows of a float32 CPU matrix;
    ``indptr`` non-decreasing, from 0 to ``len(values)``), each sum in row order."""
    lib = _loaded()
    if not supports(values) or values.dim() != 2 or int(indptr[0]) != 0 or int(indptr[-1]) != len(values):
        raise ValueError(f"segments {tuple(indptr.shape)} of a {values.dtype} {tuple(values.shape)} matrix")
    values, indptr = values.contiguous(), _ints(indptr)
    out = torch.empty(len(indptr) - 1)
    lib.segment_square_sums(len(out), _pointer(indptr), values.shape[1], _pointer(values), _pointer(out))
    return out


def top_rows(scores: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores.topk(depth, dim=1)`` for a float32 CPU matrix whose rows are contiguous: the values and columns of
    each row's ``depth`` largest entries, descending, equal values in column order (rows in parallel on torch's
    intra-op threads)."""
    lib = _loaded()
    num_rows, num_cols = scores.shape
    if not 0 < depth <= num_cols or scores.stride(1) != 1 or not supports(scores):
        raise ValueError(f"top {depth} of a {scores.dtype} {tuple(scores.shape)} matrix with strides {scores.stride()}")
    values, index = torch.empty((num_rows, depth)), torch.empty((num_rows, depth), dtype=torch.int64)
    lib.top_rows(num_rows, num_cols, scores.stride(0), _pointer(scores), depth, torch.get_num_threads(),
                 _pointer(values), _pointer(index))
    return values, index


def _check(status: int, indices: str, invalid: str = "more than 16 linear layers after the first") -> None:
    if status == 1:
        raise MemoryError("a native kernel could not allocate its scratch memory")
    if status == 2:
        raise IndexError(f"{indices} out of range")
    if status == 3:
        raise ValueError(f"the native kernels cannot take {invalid}")
