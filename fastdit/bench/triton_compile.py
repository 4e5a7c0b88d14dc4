"""Compile-level evidence for the Triton forward, without a GPU: Triton's real compiler for a named target.

:func:`compile_kernel` compiles ``_block_sparse_fwd`` for ``sm_90`` or ``sm_80`` (PTX, then ptxas to a cubin,
then cuobjdump's SASS) and reads what decides its speed before any timing: registers, spills and stack (ptxas
``-v``), shared memory against the target's cap, threads and CTAs per SM, how many K/V buffers the software
pipeliner keeps in each loop (the leading size of the TTGIR's ``[buffers, keys, D]`` allocations: level 0
first, then the pooled levels' loop), the matrix instructions (``wgmma.mma_async`` on sm_90, ``mma.sync``
otherwise), ptxas' warnings that it serialized the wgmma ops (``C7514``: other instructions read an
in-flight accumulator; ``C7515``; any code of that warning), TMA copies and the TMA descriptors the kernel makes
itself (host-side ones arrive as parameters), ``bar.sync`` barriers; from the SASS, each
hot loop's instructions, matrix instructions, MUFU ops and barriers per iteration (one kv tile), the
deepest wgmma wait and the MUFU ops issued while a wgmma group is in flight (the overlap of softmax and matrix
work); and, for the warp-specialized loop, whether Triton partitioned it (a
``ttg.warp_specialize`` op in the TTGIR), the ``setmaxnreg`` counts and the query rows each consumer
partition computes. :meth:`CompileResult.failures` says why a build is not green; :func:`same_code` compares
the padded build's full-tile loop with the unpadded build's; :func:`against` lists what changed since an
earlier report. ``fastdit bench kernels --compile-only`` prints
it as a table for every autotune config and exits 1 on a failure; the slow test in
tests/kernels/test_triton.py asserts it for the default ones.

Needs Triton with its NVIDIA backend (ptxas ships in the wheel) and ``TRITON_INTERPRET`` unset when
:mod:`fastdit.kernels.triton.forward` is first imported (run it in a process of its own under pytest).
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import asdict, dataclass, field

__all__ = ["VARIANTS", "ARCHS", "SHARED_CAP", "WS_VARIANTS", "CompileResult", "compile_kernel", "compile_pooling",
           "configs_for", "default_config", "check", "same_code", "against", "COMPARED"]

VARIANTS = {
    # level 0 of an unpadded grid (radial on raster order, 128-token blocks): no validity bits read
    "level0": dict(N_LEVELS=1, HAS_MASK=False, SKIP_Q=False),
    # level 0 with padding (tile orders, text blocks): validity bits on partial tiles, dead query tiles skipped
    "level0-padded": dict(N_LEVELS=1, HAS_MASK=True, SKIP_Q=True),
    # pyramid levels 0..3 with padding: the level-0 loop, then one loop over the pooled levels' tiles
    "levels": dict(N_LEVELS=4, HAS_MASK=True, SKIP_Q=True),
    # 64-token blocks with padding: Sol-Attn's published blocks (Morton order, text blocks; its pooled tail is
    # merged outside the kernel by log-sum-exp, fastdit.kernels.tail) and SVG2's per-head layouts over
    # cluster-sorted tokens (a per-head CSR is read per head at run time, like any per-head layout)
    "64-padded": dict(N_LEVELS=1, HAS_MASK=True, SKIP_Q=True, BLOCK_Q=64, LOG_BLOCK_KV=6),
}
ARCHS = {90: "sm_90 (H100/H200, wgmma)", 80: "sm_80 (A100, mma.sync)"}
WS_VARIANTS = ("level0", "level0-padded")  # the warp-specialized loop is level 0's (sm_90)
# largest dynamic shared memory one block may use: 227 KB on H100/H200, 163 KB on A100
SHARED_CAP = {90: 232448, 80: 166912}
# per multiprocessor: shared memory (each block also takes 1 KB of it), registers, threads, blocks
SM_SHARED, SM_REGISTERS, SM_THREADS, SM_BLOCKS = {90: 233472, 80: 167936}, 65536, 2048, 32
MIN_KV_BUFFERS = 3
# the warp-specialized loop's producer warp refills one buffer while the consumers read the other
MIN_WS_KV_BUFFERS = 2
SAME_CODE_TOLERANCE = 0.05  # the padded build's full-tile loop against the unpadded build's, in SASS instructions
# what against() compares with an earlier report: ptxas' resources, SASS per iteration of each hot loop, PTX barriers
COMPARED = ("registers", "spill_bytes", "shared_bytes", "loop_instructions", "bar_sync")


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
    serialized: list[str]  # ptxas warning codes saying it serialized the wgmma ops (C7514, C7515, ...)
    tma_ops: int
    bar_sync: int
    seconds: float
    tma: bool = False  # Q/K/V read through TMA descriptors (FASTDIT_TRITON_TMA=1)
    ws: bool = False  # warp-specialized level-0 loop asked for (FASTDIT_TRITON_WS=1)
    # TMA descriptors the kernel writes to global memory itself (each copied and fenced once in the PTX); the
    # others come from the host as kernel parameters
    device_descriptors: int = 0
    partitions: int = 0  # ttg.warp_specialize ops in the TTGIR (1: the loop was split into producer/consumers)
    threads: int = 0  # per block, producer warps included
    ctas_per_sm: int = 0  # blocks resident per multiprocessor (shared memory, registers, threads)
    # the hot loops in SASS (backward branches around matrix instructions), in code order: level 0's full
    # tiles, its partial tiles, the pooled levels (warp-specialized: one loop per consumer warpgroup)
    loop_instructions: list[int] = field(default_factory=list)  # per warp per iteration (one kv tile)
    loop_mma: list[int] = field(default_factory=list)  # HGMMA (sm_90) / HMMA (sm_80) per iteration
    loop_mufu: list[int] = field(default_factory=list)  # special-function ops (exp2) per iteration
    loop_barriers: list[int] = field(default_factory=list)  # CTA-wide barriers (BAR.SYNC/ARV) per iteration
    wait_depth: int | None = None  # deepest wgmma.wait_group in the hot loops (0: every GEMM waited on at once)
    # per hot loop, MUFU ops (exp2) per iteration issued while a wgmma group of the warp is in flight (sm_90)
    loop_mufu_in_flight: list[int] = field(default_factory=list)
    maxnreg: list[int] = field(default_factory=list)  # setmaxnreg register counts used (warp-specialized)
    partition_rows: list[tuple[int, int]] = field(default_factory=list)  # query rows [start, end) per consumer

    def expected_loops(self) -> int:
        """Hot loops this build must have: level 0's full tiles (one per consumer when warp-specialized), its
        partial tiles in a loop of their own (unless warp-specialized), the pooled levels'."""
        variant = VARIANTS[self.variant]
        level0 = len(self.partition_rows) if self.ws else 1 + variant["HAS_MASK"]
        return level0 + (variant["N_LEVELS"] > 1)

    def failures(self) -> list[str]:
        """Why this compile is not green (empty when it is)."""
        out = []
        if self.spill_bytes or self.stack_bytes:
            out.append(f"spills ({self.spill_bytes} B, stack {self.stack_bytes} B)")
        if self.shared_bytes > SHARED_CAP[self.arch]:
            out.append(f"shared memory {self.shared_bytes} B > cap {SHARED_CAP[self.arch]} B")
        least = MIN_WS_KV_BUFFERS if self.ws else MIN_KV_BUFFERS
        if self.kv_buffers < least:
            out.append(f"{self.kv_buffers} K/V buffers in the level-0 loop (< {least})")
        if len(self.loop_instructions) != self.expected_loops():
            out.append(f"{len(self.loop_instructions)} hot loops in SASS, expected {self.expected_loops()} (level-0 "
                       "full tiles unmasked, partial tiles masked apart, pooled levels)")
        if self.arch >= 90 and self.mma != "wgmma":
            out.append(f"no wgmma on sm_{self.arch} ({self.mma})")
        if self.arch < 90 and self.mma != "mma.sync":
            out.append(f"no mma.sync on sm_{self.arch}")
        if self.serialized:
            out.append(f"{', '.join(self.serialized)}: wgmma serialized by ptxas")
        if (self.tma or self.ws) and not self.tma_ops:
            out.append("TMA asked for, no cp.async.bulk.tensor in the PTX")
        if self.device_descriptors > self.ws:  # host-side descriptors; the warp-specialized loop's Q made on device
            out.append(f"{self.device_descriptors} TMA descriptors made on the device (host-side expected"
                       + (", but Q's)" if self.ws else ")"))
        if self.ws and not self.partitions:
            out.append("warp specialization asked for, no ttg.warp_specialize in the TTGIR")
        if self.ws and self.partitions:
            rows = sorted(self.partition_rows)
            tiled = (bool(rows) and rows[0][0] == 0 and rows[-1][1] == self.block_m and all(a < b for a, b in rows)
                     and all(b == c for (_, b), (c, _) in zip(rows, rows[1:])))
            if not tiled:
                out.append(f"consumer partitions compute query rows {rows}, not [0, {self.block_m}) once each "
                           "(duplicate or misplaced work)")
        return out

    def row(self) -> dict:
        row = asdict(self)
        row["config"] = (f"{self.block_m}x{self.block_n} w{self.num_warps} s{self.num_stages}"
                         + (" ws" if self.ws else " tma" if self.tma else ""))
        first = self.loop_instructions[:1]
        row["insts_per_tile"] = first[0] if first else None
        row["mufu_per_mma"] = round(self.loop_mufu[0] / self.loop_mma[0], 2) if first and self.loop_mma[0] else None
        row["barriers_per_tile"] = self.loop_barriers[0] if first else None
        row["mufu_in_flight"] = self.loop_mufu_in_flight[0] if self.loop_mufu_in_flight else None
        row["ok"] = not self.failures()
        row["failures"] = "; ".join(self.failures())
        return row


def configs_for(arch: int, variant: str, ws: bool = False) -> list[tuple[int, int, int, int]]:
    """The autotune configs ``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` the kernel tries on ``arch`` for
    ``variant``, warp-specialized (``ws``) or not."""
    from fastdit.kernels.triton import forward as ta

    candidates = ta._HOPPER_WS if ws else ta._HOPPER if arch >= 90 else ta._AMPERE
    block_q, block_kv = _blocks(variant)
    return [c for c in candidates if ta.config_used(c, arch >= 90, VARIANTS[variant]["N_LEVELS"], ws)
            and c[0] <= block_q and c[1] <= block_kv]  # the launcher's tiles fit in the blocks


def _blocks(variant: str) -> tuple[int, int]:
    """Query and key block of ``variant`` (128 unless it names its own)."""
    constants = VARIANTS[variant]
    return constants.get("BLOCK_Q", 128), 1 << constants.get("LOG_BLOCK_KV", 7)


def default_config(arch: int, variant: str, ws: bool = False) -> tuple[int, int, int, int]:
    """The config the kernel's first choice of kv tile leads to (the compile test's subject)."""
    level0 = VARIANTS[variant]["N_LEVELS"] == 1
    kv_tile = min(128 if arch >= 90 and level0 else 64, _blocks(variant)[1])
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
    constants = {**dict(HEAD_DIM=head_dim, BLOCK_Q=128, LOG_BLOCK_KV=7, EVEN_KV=True, KV_TILE=kv_tile,
                        RETURN_LSE=True, PRECISION="tf32", UPCAST_DOT=False, USE_TMA=tma or ws, WARP_SPEC=ws,
                        BLOCK_M=block_m, BLOCK_N=block_n, NUM_STAGES=stages), **VARIANTS[variant]}
    ints = {"LevelStart", "TilePtr", "Tiles", "KvBits", "SegPtr", "Cols", "RowOrder"}
    # host-side TMA descriptors where TMA is used (placeholder pointers otherwise, as the launcher passes)
    descriptors = {"QDesc": f"tensordesc<{dtype}[1, 1, {block_m}, {head_dim}]>",
                   **{name: f"tensordesc<{dtype}[1, 1, {kv_tile}, {head_dim}]>" for name in ("KDesc", "VDesc")},
                   "BiasDesc": f"tensordesc<fp32[1, {kv_tile}]>"}
    bias = ws and constants["HAS_MASK"]

    def kind(name: str) -> str:
        if name in constants:
            return "constexpr"
        if name in descriptors:
            if name == "BiasDesc":
                return descriptors[name] if bias else "*i32"
            return descriptors[name] if tma or ws else f"*{dtype}"
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
    loops = _hot_loops(_sass(kernel.asm["cubin"]), "HGMMA" if arch >= 90 else "HMMA")
    threads = next((int(n) for n in re.findall(r"\.(?:reqntid|maxntid) (\d+)", ptx)), warps * 32)
    registers = number(r"Used (\d+) registers")
    waits = [int(n) for n in re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, 0x([0-9a-f]+)", "\n".join(sum(loops, [])))]
    wgmma = len(re.findall(r"wgmma\.mma_async", ptx))
    mma_sync = len(re.findall(r"\bmma\.sync", ptx))
    return CompileResult(
        arch=arch, variant=variant, block_m=block_m, block_n=block_n, kv_tile=kv_tile, num_warps=warps,
        num_stages=stages, registers=registers,
        spill_bytes=number(r"(\d+) bytes spill stores") + number(r"(\d+) bytes spill loads"),
        stack_bytes=number(r"(\d+) bytes stack frame"), shared_bytes=int(kernel.metadata.shared),
        kv_buffers=min(buffers[:2], default=0),
        # the pooled levels' loop comes last (after one or two level-0 loops)
        pooled_buffers=min(buffers[-2:], default=0) if VARIANTS[variant]["N_LEVELS"] > 1 else None,
        mma="wgmma" if wgmma else "mma.sync" if mma_sync else "none", mma_count=wgmma or mma_sync,
        serialized=_serialized(ptxas), tma_ops=len(re.findall(r"cp\.async\.bulk\.tensor", ptx)),
        device_descriptors=len(re.findall(r"tensormap\.cp_fenceproxy", ptx)),
        bar_sync=len(re.findall(r"\bbar\.sync\b|\bbarrier\.sync\b", ptx)), seconds=round(seconds, 2), tma=tma, ws=ws,
        partitions=len(re.findall(r"ttg\.warp_specialize\(", ttgir)), threads=threads,
        ctas_per_sm=_ctas_per_sm(arch, int(kernel.metadata.shared), registers, threads),
        loop_instructions=[len(body) for body in loops],
        loop_mma=[sum(" HGMMA" in x or " HMMA" in x for x in body) for body in loops],
        loop_mufu=[sum(" MUFU." in x for x in body) for body in loops],
        loop_barriers=[sum(" BAR.SYNC" in x or " BAR.ARV" in x for x in body) for body in loops],
        wait_depth=max(waits, default=None),
        loop_mufu_in_flight=[_mufu_in_flight(body) for body in loops] if arch >= 90 else [],
        maxnreg=sorted({int(n) for n in re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", ptx)}),
        partition_rows=_partition_rows(ttgir))


def _sass(cubin: bytes) -> str:
    """The cubin's SASS, by the cuobjdump that ships with Triton."""
    import os
    import subprocess
    import tempfile

    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        return subprocess.run([knobs.nvidia.cuobjdump.path, "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout
    finally:
        os.remove(f.name)


def _hot_loops(sass: str, mma: str) -> list[list[str]]:
    """The SASS bodies of the loops around matrix instructions, in code order: each a backward branch ``BRA
    target`` and the instructions from ``target`` to it (one iteration). Branches after the last ``EXIT`` are
    the returns of out-of-line waits (mbarrier retries), not loops; a loop holding another such loop is not
    counted (only the innermost: a partition's span around its loop is not a loop of matrix work)."""
    code = [(int(address, 16), text) for address, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", sass)]
    last_exit = max((a for a, t in code if re.match(r"(@!?U?P\w+\s+)?EXIT\b", t)), default=code[-1][0] if code else 0)
    spans = []
    for address, text in code:
        found = re.match(r"(?:@!?U?P\w+\s+)?BRA(?:\.\S+)?\s+0x([0-9a-f]+)$", text)
        if found and int(found.group(1), 16) <= address < last_exit:
            body = [t for a, t in code if int(found.group(1), 16) <= a <= address]
            if any(t.split()[0].startswith(mma) for t in body if t):
                spans.append((int(found.group(1), 16), address, body))
    inner = [s for s in spans if not any(o is not s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
    return [[" " + t for t in body] for _, _, body in sorted(inner, key=lambda s: s[0])]


def _serialized(ptxas: str) -> list[str]:
    """Codes of ptxas' warnings (its ``-v`` log) that it serialized the wgmma ops, e.g. ``["C7514"]``."""
    return sorted(set(re.findall(r"\((C\d+)\)[^\n]*wgmma[^\n]*serialized", ptxas)))


def _mufu_in_flight(body: list[str]) -> int:
    """MUFU ops of one loop iteration (SASS ``body``, in order) issued while a wgmma group of the warp is in flight.

    A group is open from its first ``HGMMA`` to the one marked ``gsb0`` (its commit) and then outstanding until a
    ``WARPGROUP.DEPBAR.LE gsb0, N`` leaves at most ``N`` groups; wgmma runs asynchronously all that time, so
    a MUFU issued then overlaps it. The loop is a cycle (a group issued near its end may be waited on only at
    the top of the next iteration), so the body is scanned twice and the second pass counted.
    """
    open_group, outstanding = False, 0
    for counting in (False, True):
        count = 0
        for text in body:
            op = re.sub(r"^@!?U?P\w+\s+", "", text.strip())
            if op.startswith("HGMMA"):
                open_group = not re.search(r"\bgsb0\b", op)
                outstanding += not open_group
            elif op.startswith("WARPGROUP.DEPBAR.LE"):
                outstanding = min(outstanding, int(op.rsplit(",", 1)[1].strip(), 16))
            elif op.startswith("MUFU.") and (open_group or outstanding):
                count += counting
    return count


def _partition_rows(ttgir: str) -> list[tuple[int, int]]:
    """Query rows ``[start, end)`` of the tile each consumer partition of a ``ttg.warp_specialize`` computes:
    its ``offs_m`` range plus any constant the partitioner added to the range's scalar base (partitions
    without ``offs_m``, the producer, are left out)."""
    rows = []
    for body in re.findall(r"partition\d+\((.*?)ttg\.warp_return", ttgir, re.S):
        found = re.search(r"%offs_m\S* = tt\.make_range \{[^}]*end = (\d+) : i32, start = (\d+) : i32", body)
        if not found:
            continue
        end, start = int(found.group(1)), int(found.group(2))
        base = re.search(r"%offs_m\S* = tt\.splat (%[\w.]+)", body)
        moved = base and re.search(rf"{re.escape(base.group(1))} = arith\.addi \S+, %c(\d+)_i32", body)
        shift = int(moved.group(1)) if moved else 0
        rows.append((start + shift, end + shift))
    return rows


def _ctas_per_sm(arch: int, shared: int, registers: int, threads: int) -> int:
    """Blocks one multiprocessor holds: shared memory (plus 1 KB per block), registers (allocated per warp in
    units of 256) and threads."""
    per_warp = -(-registers * 32 // 256) * 256
    by_registers = SM_REGISTERS // max(per_warp * (threads // 32), 1)
    return min(SM_SHARED[arch] // (shared + 1024), by_registers, SM_THREADS // threads, SM_BLOCKS)


def same_code(rows: list[dict]) -> list[dict]:
    """For each build compiled both for ``level0`` and ``level0-padded`` (same target, config and path): SASS
    instructions per iteration of the full-tile loop in each and their ratio; ``ok`` when within
    ``SAME_CODE_TOLERANCE`` (padding elsewhere leaves the full tiles' code alone), checked at the config the
    kernel starts from on each target (``default_config``: 128-token blocks, the benchmark's radial case).
    Other configs are listed, not checked (``ok`` None): register allocation differs between the builds (the
    64x64 config moves loop addresses through uniform registers in one and not the other); so are the
    warp-specialized builds, which run every tile through one loop, biased when there is padding."""
    key = lambda r: (r["arch"], r["config"])  # noqa: E731
    label = lambda c: f"{c[0]}x{c[1]} w{c[2]} s{c[3]}"  # noqa: E731
    unpadded = {key(r): r for r in rows if r["variant"] == "level0"}
    out = []
    for r in rows:
        base = unpadded.get(key(r))
        if r["variant"] != "level0-padded" or base is None or not base["insts_per_tile"]:
            continue
        ratio = r["insts_per_tile"] / base["insts_per_tile"] if r["insts_per_tile"] else None
        out.append({"arch": r["arch"], "config": r["config"], "level0": base["insts_per_tile"],
                    "level0_padded": r["insts_per_tile"], "ratio": ratio,
                    "ok": None if r["ws"] or r["config"] != label(default_config(r["arch"], r["variant"]))
                    else ratio is not None and abs(ratio - 1) <= SAME_CODE_TOLERANCE})
    return out


def against(rows: list[dict], baseline: list[dict]) -> list[dict]:
    """Builds of ``rows`` (:meth:`CompileResult.row`) that an earlier report's ``baseline`` rows also compiled
    (same target, variant and config) and whose ``COMPARED`` resources changed: each as ``[before, after]``.

    Args:
        rows: this report's rows.
        baseline: the earlier report's rows (its JSON's ``rows``).

    Returns:
        One dict per changed build: ``arch``, ``variant``, ``config`` and, per ``COMPARED`` key, ``[before, after]``.
    """
    key = lambda r: (r["arch"], r["variant"], r["config"])  # noqa: E731
    before = {key(r): r for r in baseline}
    out = []
    for r in rows:
        old = before.get(key(r))
        if old is not None and any(old[k] != r[k] for k in COMPARED):
            out.append({"arch": r["arch"], "variant": r["variant"], "config": r["config"],
                        **{k: [old[k], r[k]] for k in COMPARED}})
    return out


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
