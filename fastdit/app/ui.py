"""The Gradio page: controls on the left, the dense and the sparse video side by side, then the numbers.

Generation goes through one queue with a concurrency limit of one, so requests on a device run one after
another and each user gets their own result. Out-of-range inputs come back as a readable message in the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastdit.app.session import CALIBRATED, DemoRequest, DemoSession
from fastdit.methods import available_methods, get_method
from fastdit.models.loading import SAMPLE_NAMES
from fastdit.runs.run import check_seed

# the bundled model knows only its toy world's grammar (combinations its training showed); real models anything
TOY_EXAMPLES = [
    "a red ball bouncing in a white room",
    "a big blue square moving up on grass",
    "a yellow triangle bouncing in a dark room",
    "a small pink ball moving right on grass",
]
EXAMPLES = [
    "a cat walking on the grass in the sun",
    "waves crashing on a rocky beach, slow motion",
    "a red ball bouncing in a white room",
]


def _metrics_markdown(m: dict[str, Any]) -> str:
    psnr = "∞ (identical)" if m["psnr_db"] == float("inf") else f"{m['psnr_db']:.2f} dB"
    sparse_density = "—" if m["sparse_density"] is None else f"{m['sparse_density']:.3f}"
    cached = " (cached)" if m["dense_cached"] else ""
    return (
        f"| Metric | Value |\n|---|---|\n"
        f"| Dense time | {m['dense_s']:.2f} s{cached} |\n"
        f"| Sparse time ({m['method']}) | {m['sparse_s']:.2f} s |\n"
        f"| Speedup | {m['speedup']:.2f}x (denoising step: {m['step_speedup']:.2f}x) |\n"
        f"| PSNR vs dense | {psnr} |\n"
        f"| SSIM vs dense | {m['ssim']:.4f} |\n"
        f"| Attention density | {m['density']:.3f} over all steps and layers; {sparse_density} where sparse |\n"
        f"| Video | {m['frames']} frames, {m['size']}, seed {m['seed']} |\n"
    )


def _options(method: str, decay: float, thresholds: str, vmoba_threshold: float, grat_mode: str,
             grat_radius: int) -> dict[str, Any]:
    """The main knob(s) of the chosen method, as ``fastdit.apply`` options."""
    if method == "radial":
        return {"decay_factor": float(decay)}
    if method == "pyramid":
        try:
            return {"thresholds": tuple(float(x) for x in thresholds.replace(" ", "").split(",") if x)}
        except ValueError:
            raise ValueError(f"pyramid thresholds must be comma-separated numbers, got {thresholds!r}") from None
    if method == "vmoba":
        return {"threshold": float(vmoba_threshold)}
    if method == "grat":
        return {"mode": grat_mode, "radius": int(grat_radius)}
    return {}


def build_demo(session: DemoSession, video_dir: str | Path, delete_cache: tuple[int, int] | None = None):
    """The page for ``session``'s model (a ``gradio.Blocks``; call ``.launch()`` on it).

    ``video_dir`` holds the mp4s the page plays (the caller owns and removes it; the session keeps only the
    newest few there); ``delete_cache`` is Gradio's ``(frequency, age)`` clean-up of its cached copies.
    """
    import gradio as gr

    limits = session.limits
    d = session.defaults
    methods = [m for m in available_methods() if m != "dense"]
    if session.calibration is not None:
        methods.append(CALIBRATED)

    def generate(prompt, negative, method, decay, thresholds, vmoba_threshold, grat_mode, grat_radius,
                 entropy, frames, height, width, steps, seed, progress=gr.Progress(track_tqdm=True)):
        try:
            request = DemoRequest(prompt=prompt, method=method, negative_prompt=negative or "",
                                  options=_options(method, decay, thresholds, vmoba_threshold, grat_mode,
                                                   grat_radius),
                                  entropy_scaling=bool(entropy), frames=int(frames), height=int(height),
                                  width=int(width), steps=int(steps), seed=check_seed(seed))
            result = session.generate(request, on_stage=lambda stage: progress(0, desc=f"running {stage}"))
        except ValueError as err:
            raise gr.Error(str(err)) from None
        dense_path, sparse_path = session.write_videos(result, video_dir)
        return (str(dense_path), str(sparse_path), _metrics_markdown(result.metrics), result.layout,
                result.metrics)

    with gr.Blocks(title="fastdit: dense vs sparse attention", delete_cache=delete_cache) as demo:
        # the model as the user named it ("sample", a hub id), not a path on this machine
        toy = session.source.name in SAMPLE_NAMES
        examples = TOY_EXAMPLES if toy else EXAMPLES
        gr.Markdown("# fastdit — dense vs sparse attention\nThe same prompt and seed, generated with the model's "
                    "own (dense) attention and with a sparse method. Model: "
                    f"`{session.source.name}`" + (" — a tiny model trained on a toy world of coloured shapes: it "
                                                   "draws prompts like the examples, nothing else." if toy else ""))
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", value=examples[0], lines=2)
                negative = gr.Textbox(label="Negative prompt", value="")
                method = gr.Dropdown(methods, value="radial" if "radial" in methods else methods[0],
                                     label="Method")
                with gr.Accordion("Method knobs", open=True):
                    decay = gr.Slider(0.05, 1.0, value=0.2, step=0.05, label="radial: decay factor")
                    thresholds = gr.Textbox(label="pyramid: cumulative-mass thresholds per level",
                                            value=",".join(map(str, get_method("pyramid").options().thresholds))
                                            if "pyramid" in methods else "")
                    vmoba_threshold = gr.Slider(0.05, 1.0, value=0.25, step=0.05, label="vmoba: threshold")
                    grat_mode = gr.Radio(["crisscross", "surround", "lines"], value="crisscross", label="grat: mode")
                    grat_radius = gr.Slider(0, 4, value=1, step=1, label="grat: surround radius (groups)")
                entropy = gr.Checkbox(label="Attention-entropy scaling", value=False)
                with gr.Row():
                    frames = gr.Slider(limits.frames[0], limits.frames[1], step=limits.frames[2],
                                       value=d.get("num_frames", limits.frames[0]), label="Frames")
                    steps = gr.Slider(limits.steps[0], limits.steps[1], step=1,
                                      value=d.get("num_inference_steps", 8), label="Steps")
                with gr.Row():
                    height = gr.Slider(limits.height[0], limits.height[1], step=limits.height[2],
                                       value=d.get("height", limits.height[0]), label="Height")
                    width = gr.Slider(limits.width[0], limits.width[1], step=limits.width[2],
                                      value=d.get("width", limits.width[0]), label="Width")
                seed = gr.Number(value=0, precision=0, label="Seed")
                run = gr.Button("Generate", variant="primary")
                gr.Examples(examples, inputs=prompt)
            with gr.Column(scale=2):
                with gr.Row():
                    dense_video = gr.Video(label="Dense (stock attention)", autoplay=True, loop=True)
                    sparse_video = gr.Video(label="Sparse", autoplay=True, loop=True)
                metrics = gr.Markdown(label="Metrics")
                with gr.Row():
                    layout = gr.Image(label="Block layout (last sparse layer, head 0; orange: text blocks)",
                                      type="numpy")
                    numbers = gr.JSON(label="Numbers")
        run.click(generate, inputs=[prompt, negative, method, decay, thresholds, vmoba_threshold, grat_mode,
                                    grat_radius, entropy, frames, height, width, steps, seed],
                  outputs=[dense_video, sparse_video, metrics, layout, numbers], api_name="generate")
    demo.queue(default_concurrency_limit=1)
    return demo
