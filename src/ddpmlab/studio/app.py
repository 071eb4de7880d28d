"""The studio's page: a run picker over six tabs (Sample, Compare, Forward, Guidance, Edit, Run).

Every job that runs a network shares one queue slot (concurrency_id "network"), so two pages sampling at
once wait for each other instead of interleaving on the same network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import gradio, handlers as H, jobs

# pixel art stays pixel art when the browser scales a 28 x 28 grid up
CSS = """
.pixels img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
.pixels canvas { image-rendering: pixelated; }
.fit img { width: 100%; height: 100%; object-fit: contain; padding-top: 28px; box-sizing: border-box; }
"""
SHOWN = dict(interactive=False, buttons=["download", "fullscreen"])  # no share button: nothing leaves the machine
NETWORK = dict(concurrency_id="network", concurrency_limit=1)
EDITOR_HEIGHT = 300


def build_app(runs: Sequence[Path], notes: Sequence[str], workdir: Path):
    gr = gradio()
    H.PICTURES[:] = [workdir / "pictures"]
    choices = [str(p) for p in runs]
    first = choices[0] if choices else None
    datasets = list(dict.fromkeys([*_image_datasets(runs), "mnist-5k"]))
    samplers, spacings = jobs.sampler_names(), jobs.spacing_names()

    with gr.Blocks(title="ddpmlab studio", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## ddpmlab studio")
        if notes:
            gr.Markdown("\n".join(f"- {n}" for n in notes), elem_id="notes")
        with gr.Row():
            run = gr.Dropdown(choices, value=first, label="Run", scale=3, elem_id="run", allow_custom_value=True)
            ckpt = gr.Dropdown([H.LATEST], value=H.LATEST, label="Checkpoint (training step)", scale=1,
                               allow_custom_value=True, elem_id="checkpoint")
        summary = gr.Markdown(elem_id="summary")

        with gr.Tab("Sample", id="sample"):
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    sampler = gr.Dropdown(samplers, label="Sampler", elem_id="sampler")
                    steps = gr.Slider(1, 1000, value=20, step=1, label="Steps (network evaluations)", elem_id="steps")
                    spacing = gr.Dropdown(spacings, value="auto", label="Timestep spacing")
                    with gr.Row():
                        seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                        n = gr.Slider(1, jobs.MOST_IMAGES, value=16, step=1, label="Images", elem_id="images")
                    klass = gr.Dropdown(["all"], value="all", label="Class", visible=False, allow_custom_value=True)
                    prompts = gr.Textbox(label="Prompts (one grid row each)", lines=3, visible=False)
                    guidance = gr.Slider(0, 10, value=0, step=0.5, label="Guidance w", visible=False)
                    with gr.Row():
                        go = gr.Button("Generate", variant="primary", elem_id="generate")
                        halt = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Column(scale=2):
                    with gr.Row():
                        x_t = gr.Image(label="x_t", format="png", **SHOWN, height=260,
                                       elem_id="frame-xt", elem_classes="pixels")
                        x0 = gr.Image(label="x0 estimate", format="png", **SHOWN, height=260,
                                      elem_id="frame-x0", elem_classes="pixels")
                    status = gr.Markdown(elem_id="sample-status")
                    grid = gr.Image(label="Samples", type="filepath", format="png", **SHOWN, height=360,
                                    elem_id="grid", elem_classes="pixels")
                    with gr.Row():
                        png = gr.DownloadButton("Download PNG", interactive=False, elem_id="download-png")
                        npz = gr.DownloadButton("Download .npz", interactive=False, elem_id="download-npz")

        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                with gr.Column(min_width=260):
                    c_seed = gr.Number(0, precision=0, label="Seed (the same for both)")
                    c_n = gr.Slider(1, jobs.MOST_IMAGES, value=8, step=1, label="Images", elem_id="compare-n")
                    c_klass = gr.Dropdown(["all"], value="all", label="Class", visible=False, allow_custom_value=True)
                    c_guidance = gr.Slider(0, 10, value=0, step=0.5, label="Guidance w", visible=False)
                with gr.Column(min_width=220):
                    sampler_a = gr.Dropdown(samplers, value="ddim", label="A: sampler")
                    steps_a = gr.Slider(1, 1000, value=10, step=1, label="A: steps")
                    spacing_a = gr.Dropdown(spacings, value="auto", label="A: spacing")
                with gr.Column(min_width=220):
                    sampler_b = gr.Dropdown(samplers, value="dpmpp-2m", label="B: sampler")
                    steps_b = gr.Slider(1, 1000, value=10, step=1, label="B: steps")
                    spacing_b = gr.Dropdown(spacings, value="auto", label="B: spacing")
            with gr.Row():
                c_go = gr.Button("Compare", variant="primary", elem_id="compare-go")
                c_halt = gr.Button("Stop", variant="stop")
            c_status = gr.Markdown(elem_id="compare-status")
            with gr.Row():
                grid_a = gr.Image(label="A", type="filepath", **SHOWN, height=300, elem_id="grid-a",
                                  elem_classes="pixels")
                grid_b = gr.Image(label="B", type="filepath", **SHOWN, height=300, elem_id="grid-b",
                                  elem_classes="pixels")

        with gr.Tab("Forward", id="forward"):
            with gr.Row():
                with gr.Column(min_width=260):
                    f_source = gr.Radio(["dataset", "upload"], value="dataset", label="Picture from",
                                        elem_id="forward-source")
                    f_data = gr.Dropdown(datasets, value=datasets[0], label="Dataset")
                    f_index = gr.Number(0, precision=0, minimum=0, label="Image index")
                    f_upload = gr.File(label=f"Upload a picture (under {jobs.MAX_UPLOAD_MB} MB)", type="filepath",
                                       file_types=["image"], elem_id="forward-upload")
                    f_schedule = gr.Dropdown(list(jobs.SCHEDULE_NAMES), value="cosine", label="Schedule")
                    f_T = gr.Number(1000, precision=0, minimum=1, maximum=10_000, label="T")
                    f_seed = gr.Number(0, precision=0, label="Noise seed")
                with gr.Column(scale=2):
                    f_t = gr.Slider(0, 1000, value=250, step=1, label="t", elem_id="forward-t")
                    with gr.Row():
                        f_x0 = gr.Image(label="x_0", format="png", **SHOWN, height=200,
                                        elem_classes="pixels")
                        f_xt = gr.Image(label="x_t ~ q(x_t | x_0)", format="png", **SHOWN, height=200,
                                        elem_id="forward-xt", elem_classes="pixels")
                    f_text = gr.Markdown(elem_id="forward-text")
                    f_curve = gr.Image(label="signal-to-noise ratio", format="png", **SHOWN,
                                       elem_id="forward-curve")
                    f_strip = gr.Image(label="the same noise at eight t", format="png", **SHOWN,
                                       elem_classes="pixels")

        with gr.Tab("Guidance", id="guidance"):
            gr.Markdown("Classifier-free guidance, (1 + w) eps(x, c) - w eps(x): a row per class (or prompt), a "
                        "block per w, the same seeds in every block, as `ddpmlab sample --guidance-sweep` draws it.")
            with gr.Row():
                g_weights = gr.Textbox("0,1,3,5", label="Weights w (comma-separated)")
                g_per = gr.Slider(1, 16, value=6, step=1, label="Images per class")
                g_seed = gr.Number(0, precision=0, label="Seed")
            with gr.Row():
                g_sampler = gr.Dropdown(samplers, label="Sampler", elem_id="sampler")
                g_steps = gr.Slider(1, 1000, value=20, step=1, label="Steps")
                g_spacing = gr.Dropdown(spacings, value="auto", label="Spacing")
            g_prompts = gr.Textbox(label="Prompts (text runs; one row each)", lines=3, visible=False)
            with gr.Row():
                g_go = gr.Button("Sweep", variant="primary", elem_id="guidance-go")
                g_halt = gr.Button("Stop", variant="stop")
            g_status = gr.Markdown(elem_id="guidance-status")
            g_out = gr.Image(label="guidance sweep", type="filepath", **SHOWN, elem_id="guidance-out")

        with gr.Tab("Edit", id="edit"):
            with gr.Row():
                with gr.Column(min_width=260):
                    e_source = gr.Radio(["training image", "upload"], value="training image", label="Picture from")
                    e_index = gr.Number(0, precision=0, minimum=0, label="Training image index", elem_id="edit-index")
                    e_upload = gr.File(label=f"Upload a picture (under {jobs.MAX_UPLOAD_MB} MB)", type="filepath",
                                       file_types=["image"], elem_id="edit-upload", height=120)
                    e_use = gr.Button("Use picture", elem_id="edit-use")
                    e_seed = gr.Number(0, precision=0, label="Seed")
                    e_n = gr.Slider(1, 8, value=4, step=1, label="Edits")
                    e_klass = gr.Dropdown(["all"], value="all", label="Class (conditional runs)", visible=False,
                                          allow_custom_value=True)
                with gr.Column(scale=2):
                    editor = gr.ImageEditor(label="Paint the region to fill in (inpainting)", type="numpy",
                                            sources=[], height=EDITOR_HEIGHT, elem_id="editor",
                                            elem_classes="pixels", transforms=[],
                                            brush=gr.Brush(colors=["rgb(255, 64, 64)"], color_mode="fixed",
                                                           default_size=16), format="png")
                    e_out = gr.Image(label="result", format="png", **SHOWN, elem_id="edit-out",
                                     elem_classes="pixels", height=200)
            picture = gr.State()
            with gr.Row():
                with gr.Column():
                    e_strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="SDEdit strength (t0 = strength T)")
                    e_sdedit = gr.Button("SDEdit", variant="primary", elem_id="sdedit-go")
                with gr.Column():
                    with gr.Row():
                        e_resample = gr.Slider(1, 10, value=1, step=1, label="RePaint resampling")
                        e_jump = gr.Slider(1, 50, value=10, step=1, label="jump")
                    e_inpaint = gr.Button("Inpaint", variant="primary", elem_id="inpaint-go")
                with gr.Column():
                    with gr.Row():
                        e_a = gr.Number(1, precision=0, label="Seed A")
                        e_b = gr.Number(2, precision=0, label="Seed B")
                        e_frames = gr.Slider(2, 16, value=8, step=1, label="Frames")
                    e_interp = gr.Button("Interpolate", variant="primary", elem_id="interpolate-go")

        with gr.Tab("Run", id="run"):
            with gr.Row():
                with gr.Column():
                    r_loss = gr.Image(label="training loss", type="filepath", **SHOWN, height=320, elem_id="run-loss",
                                      elem_classes="fit")
                    r_metrics = gr.Dataframe(label="metrics.csv (last rows)", interactive=False)
                with gr.Column():
                    r_config = gr.Code(label="config.toml", interactive=False, max_lines=40, elem_id="run-config")
            r_report = gr.Markdown(elem_id="run-report")
            r_results = gr.JSON(label="results (nll.json, alignment.json, eval.json)", visible=False)

        # ------------------------------------------------------------ wiring
        laid_out = dict(checkpoint=ckpt, summary=summary, sampler=sampler, steps=steps, spacing=spacing, seed=seed,
                        prompts=prompts, guidance=guidance, forward_T=f_T, forward_t=f_t,
                        forward_schedule=f_schedule,
                        compare_class=c_klass, compare_guidance=c_guidance, compare_steps_a=steps_a,
                        compare_steps_b=steps_b, edit_class=e_klass, guidance_sampler=g_sampler,
                        guidance_steps=g_steps, guidance_prompts=g_prompts, **{"class": klass})
        on_run = dict(fn=H.run_changed, inputs=run, outputs=[laid_out[name] for name in H.RUN_CONTROLS], queue=False,
                      api_visibility="private")
        records = dict(fn=H.records_handler(workdir), inputs=run,
                       outputs=[r_config, r_loss, r_metrics, r_report, r_results], queue=False,
                       api_visibility="private")
        forward_in = [f_source, f_data, f_index, f_upload, f_schedule, f_T, f_t, f_seed]
        forward_out = [f_x0, f_xt, f_strip, f_curve, f_text]
        forward = dict(fn=H.forward_view, inputs=forward_in, outputs=forward_out, concurrency_id="forward",
                       concurrency_limit=2, trigger_mode="always_last", show_progress="hidden")
        source = dict(inputs=[run, e_source, e_index, e_upload], outputs=[editor, picture], queue=False,
                      api_visibility="private")
        for event in (run.change, demo.load):
            event(**on_run).then(**records).then(**forward, api_visibility="private").then(H.first_edit_source,
                                                                                           **source)
        # a new sampler brings its own spacing, as on the command line
        sampler.input(lambda: "auto", None, spacing, queue=False, api_visibility="private")

        job = go.click(H.sample_handler(workdir), [run, ckpt, sampler, steps, spacing, seed, n, klass, prompts,
                                                   guidance], [x_t, x0, status, grid, png, npz], api_name="sample",
                       **NETWORK)
        halt.click(H.stop_handler(), None, None, cancels=[job], queue=False, api_name="stop")
        c_job = c_go.click(H.compare_handler(workdir), [run, ckpt, c_seed, c_n, c_klass, c_guidance, sampler_a,
                                                        steps_a, spacing_a, sampler_b, steps_b, spacing_b],
                           [grid_a, grid_b, c_status], api_name="compare", **NETWORK)
        c_halt.click(H.stop_handler(), None, None, cancels=[c_job], queue=False, api_visibility="private")
        g_job = g_go.click(H.guidance_handler(workdir), [run, ckpt, g_weights, g_per, g_seed, g_sampler, g_steps,
                                                         g_spacing, g_prompts], [g_out, g_status], api_name="guidance",
                           **NETWORK)
        g_halt.click(H.stop_handler(), None, None, cancels=[g_job], queue=False, api_visibility="private")

        f_t.change(**forward, api_name="forward")
        for control in (f_source, f_data, f_index, f_upload, f_schedule, f_seed):
            control.change(**forward, api_visibility="private")
        # a new T resizes the t slider first (its old value may lie beyond the new T), then redraws
        f_T.change(H.forward_range, f_T, f_t, queue=False, api_visibility="private").then(
            **forward, api_visibility="private")
        e_use.click(H.edit_source, **{**source, "api_visibility": "public"}, api_name="edit_source")
        e_sdedit.click(H.sdedit, [run, ckpt, picture, e_strength, e_n, e_seed, e_klass], e_out, api_name="sdedit",
                       **NETWORK)
        e_inpaint.click(H.inpaint, [run, ckpt, picture, editor, e_n, e_seed, e_klass, e_resample, e_jump], e_out,
                        api_name="inpaint", **NETWORK)
        e_interp.click(H.interpolate, [run, ckpt, e_a, e_b, e_frames, e_klass], e_out, api_name="interpolate",
                       **NETWORK)
    return demo


def _image_datasets(runs: Sequence[Path]) -> list[str]:
    names = []
    for path in runs:
        try:
            f = jobs.run_facts(path)
        except Exception:
            continue
        if f.is_image:
            names.append(f.dataset)
    return names
