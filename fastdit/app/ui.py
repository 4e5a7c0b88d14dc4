"""The Gradio page: controls on the left; on the right a status line with one labelled progress bar, the dense
and the sparse video side by side, then the numbers and the layout picture with its legend.

Generation goes through one queue with a concurrency limit of one, so requests on a device run one after
another and each user gets their own result. A generation whose client has gone (tab closed, connection lost,
Stop) is stopped at its next denoising step, so it doesn't hold the model for the users who wait. Input
mistakes come back as a readable message in the page (no traceback in the server's log), and the previous
result is cleared first, so an error is never shown beside old numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from fastdit.app.session import CALIBRATED, MAX_PROMPT_CHARS, DemoRequest, DemoSession, JobStopped
from fastdit.methods import available_methods, get_method
from fastdit.models.loading import SAMPLE_NAMES
from fastdit.runs.pictures import AXES, LEGEND
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
KNOB_METHODS = ("radial", "pyramid", "vmoba", "grat", "svg2", "sol")  # the methods with knobs on the page, in order
DENSE_RUN = "dense (stock attention)"
VIDEO_HEIGHT = 240  # px: the status, both videos and the metrics under them fit a 1366x768 screen
RESULTS_ID = "fastdit-results"
# on Generate, the browser brings the results column into view first (on a laptop screen it starts below the
# fold once the controls are scrolled past), then sends the inputs unchanged
SCROLL_TO_RESULTS = f"(...inputs) => {{ document.getElementById('{RESULTS_ID}')?.scrollIntoView(); return inputs; }}"


def _metrics_markdown(m: dict[str, Any]) -> str:
    psnr = "∞ (identical)" if m["psnr_db"] == float("inf") else f"{m['psnr_db']:.2f} dB"
    sparse_density = "—" if m["sparse_density"] is None else f"{m['sparse_density']:.3f}"
    lpips = m["lpips_unavailable"] if m["lpips"] is None else f"{m['lpips']:.4f}"  # the reason, when missing
    cached = " (cached)" if m["dense_cached"] else ""
    bound = "" if m["bound"] is None else f"; at best {m['bound']:.2f}x with a perfect kernel at this density"
    attention = "not timed"
    if m["attention_speedup"] is not None:
        attention = (f"{m['dense_attention_s']:.2f} s → {m['attention_s']:.2f} s ({m['attention_speedup']:.2f}x), "
                     f"{m['attention_share']:.0%} of the dense run; overhead {m['overhead_share']:.0%}, dense "
                     f"warm-up {m['warmup_share']:.0%} of the sparse run")
    return (
        f"| Metric | Value |\n|---|---|\n"
        f"| Time | dense {m['dense_s']:.2f} s{cached} → {m['method']} {m['sparse_s']:.2f} s |\n"
        f"| Speedup | {m['speedup']:.2f}x (denoising step: {m['step_speedup']:.2f}x){bound} |\n"
        f"| Attention | {attention} |\n"
        f"| PSNR vs dense | {psnr} |\n"
        f"| SSIM vs dense | {m['ssim']:.4f} |\n"
        f"| LPIPS vs dense | {lpips} |\n"
        f"| Attention density | {m['density']:.3f} over all steps and layers; {sparse_density} where sparse |\n"
        f"| Video | {m['frames']} frames, {m['size']}, {m['steps']} steps, seed {m['seed']} |\n"
        f"| Entropy scaling | {'on' if m['entropy_scaling'] else 'off'} |\n"
    )


BAR_COLOURS = {"attention": "#3b82f6", "overhead": "#f59e0b", "other": "#9ca3af"}


def time_bars_html(parts: dict[str, dict[str, float]] | None, method: str) -> str:
    """One stacked bar per run (dense, then the method): seconds in attention, fastdit's overhead and
    everything else, on one scale, so the share attention takes and what sparse attention saved show at a
    glance.

    Args:
        parts: ``Breakdown.parts()`` (``None``: not timed, no bars).
        method: the sparse run's label.

    Returns:
        HTML (empty without ``parts``).
    """
    if not parts:
        return ""
    runs = [(label, seconds) for label, seconds in (("dense", parts["dense"]), (method, parts["sparse"])) if seconds]
    longest = max(sum(seconds.values()) for _, seconds in runs)
    bars = []
    for label, seconds in runs:
        segments = "".join(
            f'<span title="{part} {value:.2f} s" style="width:{100 * value / longest:.2f}%;'
            f'background:{BAR_COLOURS[part]};display:inline-block;height:14px"></span>'
            for part, value in seconds.items() if value > 0)
        bars.append(f'<div style="display:flex;align-items:center;gap:6px"><span style="width:110px;'
                    f'overflow:hidden;white-space:nowrap">{label}</span><span style="flex:1;display:flex">'
                    f'{segments}</span><span>{sum(seconds.values()):.2f} s</span></div>')
    legend = "".join(f'<span style="margin-right:10px"><span style="display:inline-block;width:10px;height:10px;'
                     f'background:{colour}"></span> {part}</span>' for part, colour in BAR_COLOURS.items())
    return f'<div class="time-bars" aria-label="where the time went">{"".join(bars)}<div>{legend}</div></div>'


def _legend_html() -> str:
    """The layout picture's colours, as swatches (the near-white one gets a border to be seen)."""
    items = "".join(
        f'<span style="display:inline-flex;align-items:center;margin-right:12px">'
        f'<span style="width:12px;height:12px;margin-right:4px;border:1px solid #999;'
        f'background:rgb{colour}"></span>{name}</span>' for name, colour in LEGEND)
    return f'<div class="layout-legend"><b>Legend</b> ({AXES}): {items}</div>'


def _options(method: str, decay: float, thresholds: str, vmoba_threshold: float, grat_mode: str,
             grat_radius: int, top_p: float, sol_tau: float) -> dict[str, Any]:
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
    if method == "svg2":
        return {"top_p": float(top_p)}
    if method == "sol":
        return {"tau": float(sol_tau)}
    return {}


def parse_seed(value: Any) -> int:
    """The seed field's text as an exact int: the page sends it as text, since a browser's number keeps only
    53 bits and would round seeds near the maximum 2**64 - 1 (API callers may also send a number).

    Args:
        value: digits (surrounding spaces allowed), or an int or whole float.

    Returns:
        The seed, 0 to 2**64 - 1.
    """
    if isinstance(value, str):
        digits = re.fullmatch(r"\s*(\d{1,20})\s*", value, re.ASCII)
        value = int(digits.group(1)) if digits else value[:40]  # a long typo is not echoed whole
    return check_seed(value)


def _client_left(blocks: Any) -> Callable[[], bool]:
    """Whether the client of the event being handled has gone.

    Gradio marks an event dead when its client's event stream closes and drops it from its running jobs on
    Stop, but cannot stop a function already running: the demo asks between denoising steps. Gradio has no
    public call for this, so it reads the queue the way Gradio's own progress updates do; if that is not found
    (another Gradio version), jobs are never called abandoned and only the time limit stops them.
    """
    from gradio.context import LocalContext

    event_id = LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if event_id is None or not isinstance(getattr(queue, "active_jobs", None), list):
        return lambda: False

    def left() -> bool:
        for job in list(queue.active_jobs):
            for event in job or ():
                if getattr(event, "_id", None) == event_id:
                    return not getattr(event, "alive", True)
        return True  # no longer running: stopped by the client

    return left


def build_demo(session: DemoSession, video_dir: str | Path, delete_cache: tuple[int, int] | None = None):
    """The page for ``session``'s model (a ``gradio.Blocks``; call ``.launch()`` on it).

    Args:
        session: the loaded model and its limits.
        video_dir: holds the mp4s the page plays (the caller owns and removes it; the session keeps only the
            newest few there).
        delete_cache: Gradio's ``(frequency, age)`` clean-up of its cached copies.

    Returns:
        The ``gradio.Blocks`` page, its queue set to one generation at a time.
    """
    import gradio as gr

    limits = session.limits
    d = session.defaults
    methods = [m for m in available_methods() if m != "dense"]
    if session.calibration is not None:
        methods.append(CALIBRATED)
    first_method = "radial" if "radial" in methods else methods[0]
    cleared = ("", None, None, "", "", None, None)  # status, videos, metrics, time bars, layout, numbers

    def generate(prompt, negative, method, decay, thresholds, vmoba_threshold, grat_mode, grat_radius, top_p, sol_tau,
                 entropy, frames, height, width, steps, seed, image, progress=gr.Progress()):
        yield cleared  # the previous result goes before anything else can fail
        client_left = _client_left(demo)

        def on_progress(run: str, done: int, total: int) -> None:
            progress((done, total), desc=DENSE_RUN if run == "dense" else f"sparse ({run})", unit="steps")

        try:
            request = DemoRequest(prompt=prompt, method=method, negative_prompt=negative or "",
                                  options=_options(method, decay, thresholds, vmoba_threshold, grat_mode,
                                                   grat_radius, top_p, sol_tau),
                                  entropy_scaling=bool(entropy), frames=int(frames), height=int(height),
                                  width=int(width), steps=int(steps), seed=parse_seed(seed), image=image)
            result = session.generate(request, on_progress=on_progress, client_left=client_left)
        except JobStopped as err:
            print(f"fastdit app: {err}", flush=True)  # one line in the server's log: who waited, and why
            raise gr.Error(str(err), print_exception=False) from None
        except (ValueError, TypeError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        dense_path, sparse_path = session.write_videos(result, video_dir)
        m = result.metrics
        status = (f"**{m['method']}**: {m['speedup']:.2f}x the dense speed, "
                  f"{'identical' if m['psnr_db'] == float('inf') else format(m['psnr_db'], '.1f') + ' dB'} "
                  f"PSNR, density {m['density']:.2f}"
                  + ("" if m["bound"] is None else f"; at best {m['bound']:.2f}x: attention is "
                     f"{m['attention_share']:.0%} of the dense run"))
        yield (status, str(dense_path), str(sparse_path), _metrics_markdown(m),
               time_bars_html(m["time_parts"], m["method"]), result.layout, m)

    with gr.Blocks(title="fastdit: dense vs sparse attention", delete_cache=delete_cache) as demo:
        # the model as the user named it ("sample", a hub id), not a path on this machine
        toy = session.source.name in SAMPLE_NAMES
        examples = TOY_EXAMPLES if toy else EXAMPLES
        gr.Markdown("## fastdit — dense vs sparse attention\nThe same prompt and seed, generated with the model's "
                    "own (dense) attention and with a sparse method. Model: "
                    f"`{session.source.name}`" + (" — a tiny model trained on a toy world of coloured shapes: it "
                                                   "draws prompts like the examples, nothing else." if toy else ""))
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", value=examples[0], lines=2, max_length=MAX_PROMPT_CHARS)
                negative = gr.Textbox(label="Negative prompt", value="", max_length=MAX_PROMPT_CHARS)
                image = gr.Image(label="Image (the first frame)" + (" — optional" if session.image_input ==
                                                                    "optional" else ""),
                                 type="pil", sources=["upload", "clipboard"], height=160,
                                 visible=session.image_input is not None)
                method = gr.Dropdown(methods, value=first_method, label="Method")
                knobs: dict[str, Any] = {}
                with gr.Group(visible=first_method == "radial") as knobs["radial"]:
                    decay = gr.Slider(0.05, 1.0, value=0.2, step=0.05, label="radial: decay factor")
                with gr.Group(visible=first_method == "pyramid") as knobs["pyramid"]:
                    thresholds = gr.Textbox(label="pyramid: cumulative-mass thresholds per level",
                                            value=",".join(map(str, get_method("pyramid").options().thresholds))
                                            if "pyramid" in methods else "")
                with gr.Group(visible=first_method == "vmoba") as knobs["vmoba"]:
                    vmoba_threshold = gr.Slider(0.05, 1.0, value=0.25, step=0.05, label="vmoba: threshold")
                with gr.Group(visible=first_method == "grat") as knobs["grat"]:
                    grat_mode = gr.Radio(["crisscross", "surround", "lines"], value="crisscross", label="grat: mode")
                    grat_radius = gr.Slider(0, 4, value=1, step=1, label="grat: surround radius (groups)")
                with gr.Group(visible=first_method == "svg2") as knobs["svg2"]:
                    top_p = gr.Slider(0.5, 1.0, value=0.9, step=0.01,
                                      label="svg2: top-p (attention mass each query cluster keeps)")
                with gr.Group(visible=first_method == "sol") as knobs["sol"]:
                    sol_tau = gr.Slider(-1.0, 4.0, value=get_method("sol").options().tau, step=0.1,
                                        label="sol: tau (standard deviations above the mean block score)")
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
                seed = gr.Textbox(value="0", label="Seed (a whole number from 0 to 2⁶⁴−1)", max_length=24)
                run = gr.Button("Generate", variant="primary")
                gr.Examples(examples, inputs=prompt)
            with gr.Column(scale=2, elem_id=RESULTS_ID):
                status = gr.Markdown("Press **Generate**.", min_height=40)
                with gr.Row():
                    dense_video = gr.Video(label="Dense (stock attention)", autoplay=True, loop=True,
                                           height=VIDEO_HEIGHT)
                    sparse_video = gr.Video(label="Sparse", autoplay=True, loop=True, height=VIDEO_HEIGHT)
                metrics = gr.Markdown(label="Metrics")
                time_bars = gr.HTML()
                with gr.Row():
                    with gr.Column():
                        layout = gr.Image(label="Block layout (last sparse layer, head 0)", type="numpy")
                        gr.HTML(_legend_html())
                    numbers = gr.JSON(label="Numbers")
        method.change(lambda chosen: [gr.update(visible=chosen == name) for name in KNOB_METHODS],
                      inputs=method, outputs=[knobs[name] for name in KNOB_METHODS], queue=False)
        run.click(generate, inputs=[prompt, negative, method, decay, thresholds, vmoba_threshold, grat_mode,
                                    grat_radius, top_p, sol_tau, entropy, frames, height, width, steps, seed, image],
                  outputs=[status, dense_video, sparse_video, metrics, time_bars, layout, numbers],
                  api_name="generate",
                  show_progress_on=[status], js=SCROLL_TO_RESULTS)
    demo.queue(default_concurrency_limit=1)
    return demo
