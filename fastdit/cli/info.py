"""Show the version, the methods and their default options, presets, backends, and what this machine can run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--models", action="store_true",
                        help="print the supported models as the README's markdown table (made from the families)")


def models_table() -> str:
    """The supported model families as a markdown table: one row per registered family, in the table's order,
    from the family's own data (the README's "Supported models" table is this output)."""
    from fastdit.patching.families import families

    rows = ["| family | model classes | sparsified (self-attention) | left untouched | grid read from | path | "
            "default preset |",
            "|---|---|---|---|---|---|---|"]
    for name, f in families().items():
        classes = ", ".join(f"`{cls}`" for cls in f.model_classes)
        path = "generic" if f.processor is None else "processor"
        rows.append(f"| `{name}` | {classes} ({f.models}) | {f.sparsified} | {f.untouched} | {f.grid_rule} | {path} | "
                    f"{_preset_cell(name)} |")
    return "\n".join(rows) + "\n"


def _preset_cell(family: str) -> str:
    """A family's default preset in a few words: its method and where its settings come from (the published
    preset's model id, or what it borrows when nothing is published; ``fastdit info`` gives the full source)."""
    from fastdit.patching.presets import FAMILY_DEFAULTS, PRESETS

    preset = FAMILY_DEFAULTS.get(family)
    if preset is None:
        return "—"
    model_id = next((mid for mid, p in PRESETS.items() if p is preset), None)
    if model_id is not None:
        return f"{preset.method}: `{model_id}`"
    if preset.source.startswith("nothing published"):
        return f"{preset.method}: nothing published; {preset.source.split(': ', 1)[1].split(',')[0]}"
    return f"{preset.method}: {preset.methods[preset.method].source.split(':')[0]}"


def collect() -> dict:
    import torch

    from fastdit import __version__
    from fastdit.kernels import backends
    from fastdit.methods import available_methods, get_method
    from fastdit.patching.families import UNSUPPORTED, families
    from fastdit.patching.presets import FAMILY_DEFAULTS, PRESETS, preset_padding

    methods = {}
    for name in available_methods():
        spec = get_method(name)
        methods[name] = {"summary": spec.summary, "dynamic": spec.dynamic, "order": spec.orders[0],
                         "block_size": spec.published_block_size, "defaults": dataclasses.asdict(spec.options())}
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = torch.cuda.is_available()
    return {
        "fastdit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.cuda.get_device_name(0) if cuda else None,
        "methods": methods,
        "backends": {name: b.summary for name, b in backends().items()},
        "families": {name: {"classes": list(f.model_classes),
                            "path": "dispatch" if f.processor is None else "processor",
                            "default": FAMILY_DEFAULTS[name].method if name in FAMILY_DEFAULTS else None,
                            "source": FAMILY_DEFAULTS[name].source if name in FAMILY_DEFAULTS else ""}
                     for name, f in sorted(families().items())},
        "unsupported": dict(UNSUPPORTED),
        "presets": {model_id: {"family": p.family, "method": p.method, "dense_steps": p.dense_steps,
                               "dense_layers": p.dense_layers, "n_train": p.n_train,
                               "methods": {name: {"dense_steps": m.dense_steps, "schedule": m.schedule,
                                                  "dense_layers": m.dense_layers, "options": m.options,
                                                  "tile": m.tile, "source": m.source}
                                           for name, m in p.methods.items()}}
                    for model_id, p in PRESETS.items()},
        "padding": preset_padding(),
    }


def run(args: argparse.Namespace) -> int:
    if args.models:
        print(models_table(), end="")
        return 0
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"fastdit {info['fastdit']}  (python {info['python']}, torch {info['torch']}, "
          f"triton {info['triton'] or 'not installed'})")
    print(f"device: {info['cuda'] or 'CPU only (no CUDA device)'}")
    print("\nmethods:")
    for name, m in info["methods"].items():
        opts = ", ".join(f"{k}={v}" for k, v in m["defaults"].items()) or "no options"
        print(f"  {name:<8} {m['summary']}  [{opts}; {m['order']} order, {m['block_size']}-token blocks]")
    print("\nbackends:")
    for name, summary in info["backends"].items():
        print(f"  {name:<8} {summary}")
    print("\nmodel families (dispatch: fastdit takes the stock processor's dispatch; processor: a fastdit processor"
          "\nreplaces one that calls SDPA itself):")
    for name, f in info["families"].items():
        print(f"  {name:<16} {', '.join(f['classes'])}  [{f['path']}; default {f['default']}]")
    print("not supported:")
    for name, reason in info["unsupported"].items():
        print(f"  {name}: {reason}")
    print("\npresets:")
    for model_id, p in info["presets"].items():
        print(f"  {model_id:<45} {p['method']}, dense_steps={p['dense_steps']}, dense_layers={p['dense_layers']}, "
              f"n_train={p['n_train']}")
        for name, m in p["methods"].items():
            knobs = ", ".join(f"{k}={v}" for k, v in m["options"].items())
            group = f", tile={m['tile']}" if m["tile"] else ""
            print(f"      {name}: dense {m['dense_steps']} of {m['schedule']} steps and {m['dense_layers']} layer(s)"
                  f"{', ' + knobs if knobs else ''}{group} — {m['source']}")
    print("\npadding per preset shape (video tokens, 128-token blocks; pad = padded tokens over real ones; work ="
          "\nquery-key pairs the Triton kernel computes over the real ones with 128x128 and 64x64 tiles, tiles of"
          "\npadding only skipped; least = the tile of the block's volume that pads least):")
    print(f"  {'model':<48} {'grid':<9} {'tokens':>7} {'raster':>7}  {'tile':<7} {'pad':>6} {'work128':>7} "
          f"{'work64':>7}  {'least':<7} {'pad':>6}")
    for r in info["padding"]:
        print(f"  {r['model']:<48} {r['grid']:<9} {r['tokens']:>7} {r['raster_padding']:>7.2%}  {r['tile']:<7} "
              f"{r['tile_padding']:>6.1%} {r['tile_kernel_padding']:>+7.1%} {r['tile_kernel_padding_64']:>+7.1%}  "
              f"{r['least_padded_tile']:<7} {r['least_padding']:>6.1%}")
    return 0
