"""Compile-level evidence for the Triton forward, without a GPU: Triton's real compiler for a named target.

:func:`compile_kernel` compiles ``_block_sparse_fwd`` for ``sm_90`` or ``sm_80`` (PTX, then ptxas to a cubin)
and reads what decides its speed before any timing: registers, spills and stack (ptxas ``-v``), shared memory
against the target's cap, how many K/V buffers the software pipeliner keeps in each loop (the leading size of
the TTGIR's ``[buffers, keys, D]`` allocations: level 0 first, then the pooled levels' loop), the matrix
instructions (``wgmma.mma_async`` on sm_90, ``mma.sync`` otherwise), ptxas' ``C7515`` warning (serialized
wgmma), TMA copies, ``bar.sync`` barriers and, for the warp-specialized loop, whether Triton partitioned it
(a ``ttg.warp_specialize`` op in the TTGIR). ``fastdit bench kernels --compile-only`` prints it as a table
for every autotune config; the slow test in tests/kernels/test_triton.py asserts it for the default ones.

Needs Triton with its NVIDIA backend (ptxas ships in the wheel) and ``TRITON_INTERPRET`` unset when
:mod:`fastdit.kernels.triton.forward` is first imported (run it in a process of its own under pytest).
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import asdict, dataclass

__all__ = ["VARIANTS", "ARCHS", "SHARED_CAP", "WS_VARIANTS", "CompileResult", "compile_kernel", "compile_pooling",
           "configs_for", "default_config", "check"]

VARIANTS = {
    # level 0 of an unpadded grid (radial on raster order, 128-token blocks): no validity bits read
    "level0": dict(N_LEVELS=1, HAS_MASK=False, SKIP_Q=False),
    # level 0 with padding (tile orders, text blocks): validity bits on partial tiles, dead query tiles skipped
    "level0-padded": dict(N_LEVELS=1, HAS_MASK=True, SKIP_Q=True),
    # pyramid levels 0..3 with padding: the level-0 loop, then one loop over the pooled levels' tiles
    "levels": dict(N_LEVELS=4, HAS_MASK=True, SKIP_Q=True),
    # sol: level 0 at Sol-Attn's 64-token blocks with padding (Morton order, text blocks); its pooled tail is
    # merged outside the kernel by log-sum-exp (fastdit.kernels.tail)
    "sol": dict(N_LEVELS=1, HAS_MASK=True, SKIP_Q=True, BLOCK_Q=64, LOG_BLOCK_KV=6),
}
_BLOCK = dict(BLOCK_Q=128, LOG_BLOCK_KV=7)  # the layout's block unless the variant names its own
ARCHS = {90: "sm_90 (H100/H200, wgmma)", 80: "sm_80 (A100, mma.sync)"}
WS_VARIANTS = ("level0", "level0-padded")  # the warp-specialized loop is level 0's (sm_90)
# largest dynamic shared memory one block may use: 227 KB on H100/H200, 163 KB on A100
SHARED_CAP = {90: 232448, 80: 166912}
MIN_KV_BUFFERS = 3


@dataclass
class CompileResult:
    arch: int
    variant: str
    block_m: int
    block_n: int
    kv_tile: int
    num_warps: int
    num_stages: int
    registers: int
    spill_bytes: int  # spill stores + spill loads
    stack_bytes: int
    shared_bytes: int
    kv_buffers: int  # level-0 loop: min over K and V
    pooled_buffers: int | None  # the pooled levels' loop (gathered keys); None without levels
    mma: str  # wgmma / mma.sync / none
    mma_count: int
    c7515: bool
    tma_ops: int
    bar_sync: int
    seconds: float
    tma: bool = False  # Q/K/V read through TMA descriptors (FASTDIT_TRITON_TMA=1)
    ws: bool = False  # warp-specialized level-0 loop asked for (FASTDIT_TRITON_WS=1)
    partitions: int = 0  # ttg.warp_specialize ops in the TTGIR (1: the loop was split into producer/consumers)

    def failures(self) -> list[str]:
        """Why this compile is not green (empty when it is)."""
        out = []
        if self.spill_bytes or self.stack_bytes:
            out.append(f"spills ({self.spill_bytes} B, stack {self.stack_bytes} B)")
        if self.shared_bytes > SHARED_CAP[self.arch]:
            out.append(f"shared memory {self.shared_bytes} B > cap {SHARED_CAP[self.arch]} B")
        if self.kv_buffers < MIN_KV_BUFFERS:
            out.append(f"{self.kv_buffers} K/V buffers in the level-0 loop (< {MIN_KV_BUFFERS})")
        if self.arch >= 90 and self.mma != "wgmma":
            out.append(f"no wgmma on sm_{self.arch} ({self.mma})")
        if self.arch < 90 and self.mma != "mma.sync":
            out.append(f"no mma.sync on sm_{self.arch}")
        if self.c7515:
            out.append("C7515: wgmma serialized")
        if (self.tma or self.ws) and not self.tma_ops:
            out.append("TMA asked for, no cp.async.bulk.tensor in the PTX")
        if self.ws and not self.partitions:
            out.append("warp specialization asked for, no ttg.warp_specialize in the TTGIR")
        return out

    def row(self) -> dict:
        row = asdict(self)
        row["config"] = (f"{self.block_m}x{self.block_n} w{self.num_warps} s{self.num_stages}"
                         + (" ws" if self.ws else " tma" if self.tma else ""))
        row["ok"] = not self.failures()
        row["failures"] = "; ".join(self.failures())
        return row


def configs_for(arch: int, variant: str, ws: bool = False) -> list[tuple[int, int, int, int]]:
    """The autotune configs ``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` the kernel tries on ``arch`` for
    ``variant``, warp-specialized (``ws``; 64-key tiles only when the variant has padding) or not."""
    from fastdit.kernels.triton import forward as ta

    candidates = ta._HOPPER_WS if ws else ta._HOPPER if arch >= 90 else ta._AMPERE
    block = {**_BLOCK, **VARIANTS[variant]}["BLOCK_Q"]  # the kernel's pruning: tiles inside one block
    return [c for c in candidates if ta.config_used(c, arch >= 90, VARIANTS[variant]["N_LEVELS"], ws)
            and not (ws and VARIANTS[variant]["HAS_MASK"] and c[1] > ta.WS_MASKED_KV_TILE)
            and c[0] <= block and c[1] <= block]


def default_config(arch: int, variant: str, ws: bool = False) -> tuple[int, int, int, int]:
    """The config the kernel's first choice of kv tile leads to (the compile test's subject)."""
    level0 = VARIANTS[variant]["N_LEVELS"] == 1 and not (ws and VARIANTS[variant]["HAS_MASK"])
    kv_tile = 128 if arch >= 90 and level0 and {**_BLOCK, **VARIANTS[variant]}["BLOCK_Q"] >= 128 else 64
    return max((c for c in configs_for(arch, variant, ws) if c[1] == kv_tile), key=lambda c: (c[0], -c[3]))


def compile_kernel(arch: int, variant: str, config: tuple[int, int, int, int], head_dim: int = 128,
                   dtype: str = "bf16", kv_tile: int | None = None, asm: dict | None = None,
                   tma: bool = False, ws: bool = False) -> CompileResult:
    """Compile the forward for ``sm_{arch}`` (no GPU needed) and read its resources; ``asm``, when given, is
    filled with the TTGIR, PTX and ptxas log. ``ws`` compiles the warp-specialized level-0 loop (with TMA)."""
    import time

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastdit.kernels.triton.forward import INTERPRETED, _block_sparse_fwd

    if INTERPRETED:
        raise RuntimeError("the kernel was imported under TRITON_INTERPRET=1: compile it in a process without it")
    block_m, block_n, warps, stages = config
    kv_tile = kv_tile or block_n
    fn = _block_sparse_fwd.fn
    constants = dict(HEAD_DIM=head_dim, EVEN_KV=True, KV_TILE=kv_tile, RETURN_LSE=True, PRECISION="tf32",
                     UPCAST_DOT=False, USE_TMA=tma or ws, WARP_SPEC=ws, BLOCK_M=block_m, BLOCK_N=block_n,
                     **{**_BLOCK, **VARIANTS[variant]})
    ints = {"LevelStart", "TilePtr", "Tiles", "KvBits", "SegPtr", "Cols"}

    def kind(name: str) -> str:
        if name in constants:
            return "constexpr"
        if name in ints:
            return "*i32"
        if name in ("Lse", "PooledBias"):
            return "*fp32"
        if name[0].isupper():
            return f"*{dtype}"
        return "fp32" if name == "qk_scale" else "i32"

    signature = {name: kind(name) for name in fn.arg_names}
    # what the launcher specializes on at run time: 16-byte aligned pointers and strides
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if signature[name].startswith("*") or name.startswith("stride")}
    log = io.StringIO()
    before = knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile
    # a cached kernel would skip ptxas, and with it the log read below
    knobs.nvidia.dump_ptxas_log = knobs.compilation.always_compile = True
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            kernel = triton.compile(ASTSource(fn, signature, constants, attrs), target=GPUTarget("cuda", arch, 32),
                                    options={"num_warps": warps, "num_stages": stages})
    finally:
        knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = before
    seconds = time.perf_counter() - start
    ttgir, ptx, ptxas = kernel.asm["ttgir"], kernel.asm["ptx"], log.getvalue()
    if asm is not None:
        asm.update(ttgir=ttgir, ptx=ptx, ptxas=ptxas)

    def number(pattern: str) -> int:
        found = re.search(pattern, ptxas)
        return int(found.group(1)) if found else 0

    # multi-buffered [buffers, keys, D] allocations: K, V (then the pooled levels' K, V); a single buffer is
    # not pipelined, and is how Q's tile shows when it comes through TMA
    buffers = [int(n) for n, keys, d in re.findall(r"ttg\.local_alloc[^\n]*?!ttg\.memdesc<(\d+)x(\d+)x(\d+)x", ttgir)
               if int(keys) in (kv_tile, block_n) and int(d) == head_dim and int(n) > 1]
    wgmma = len(re.findall(r"wgmma\.mma_async", ptx))
    mma_sync = len(re.findall(r"\bmma\.sync", ptx))
    return CompileResult(
        arch=arch, variant=variant, block_m=block_m, block_n=block_n, kv_tile=kv_tile, num_warps=warps,
        num_stages=stages, registers=number(r"Used (\d+) registers"),
        spill_bytes=number(r"(\d+) bytes spill stores") + number(r"(\d+) bytes spill loads"),
        stack_bytes=number(r"(\d+) bytes stack frame"), shared_bytes=int(kernel.metadata.shared),
        kv_buffers=min(buffers[:2], default=0),
        pooled_buffers=min(buffers[2:4], default=0) if VARIANTS[variant]["N_LEVELS"] > 1 else None,
        mma="wgmma" if wgmma else "mma.sync" if mma_sync else "none", mma_count=wgmma or mma_sync,
        c7515="C7515" in ptxas, tma_ops=len(re.findall(r"cp\.async\.bulk\.tensor", ptx)),
        bar_sync=len(re.findall(r"\bbar\.sync\b|\bbarrier\.sync\b", ptx)), seconds=round(seconds, 2), tma=tma, ws=ws,
        partitions=len(re.findall(r"ttg\.warp_specialize\(", ttgir)))


def check(arch: int, variant: str, ws: bool = False) -> CompileResult:
    """Compile the default config of ``variant`` for ``arch`` (``ws``: of the warp-specialized loop)."""
    return compile_kernel(arch, variant, default_config(arch, variant, ws), ws=ws)


def compile_pooling(arch: int, head_dim: int = 128, dtype: str = "bf16", n_levels: int = 4) -> dict:
    """Compile the fused pooling pass (:mod:`fastdit.kernels.triton.pooling`) for ``sm_{arch}``: registers, spills."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastdit.kernels.triton.pooling import _pool_levels

    fn = _pool_levels
    constants = dict(HEAD_DIM=head_dim, BLOCK_D=32, BLOCK_KV=128, N_LEVELS=n_levels, HAS_PAD=True)
    signature = {name: "constexpr" if name in constants else "*i8" if name == "Valid"
                 else f"*{dtype}" if name[0].isupper() else "i32" for name in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if signature[name].startswith("*") or name.startswith("stride")}
    log = io.StringIO()
    before = knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile
    knobs.nvidia.dump_ptxas_log = knobs.compilation.always_compile = True
    try:
        with contextlib.redirect_stdout(log):
            triton.compile(ASTSource(fn, signature, constants, attrs), target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": 4})
    finally:
        knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = before
    text = log.getvalue()
    found = {key: int(m.group(1)) if (m := re.search(pattern, text)) else 0 for key, pattern in (
        ("registers", r"Used (\d+) registers"), ("spill_bytes", r"(\d+) bytes spill stores"),
        ("stack_bytes", r"(\d+) bytes stack frame"))}
    return {**found, "ok": found["spill_bytes"] == 0}
