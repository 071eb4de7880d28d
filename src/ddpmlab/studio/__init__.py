"""`ddpmlab studio`: a local web page (Gradio, the optional `studio` extra) to explore trained runs and the
diffusion process: sample while watching the denoising, compare samplers, noise a picture, sweep guidance, edit.

    from ddpmlab.studio import start
    studio = start(["runs/demo"], port=7860)   # serves in the background; studio.url
    studio.close()

It binds 127.0.0.1 unless told otherwise, sends no analytics and loads nothing from outside the machine.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError

INSTALL_HINT = "pip install -e .[studio]"


def gradio() -> Any:
    """The gradio module, with its analytics switched off before it is imported; a one-line error if missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    # Gradio's queue summarises its events with pandas options and keywords that pandas 3 deprecates: a warning on
    # the console after every request that is neither the user's nor ddpmlab's to act on
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"gradio\.queueing")
    try:
        import gradio as gr
    except ModuleNotFoundError:
        raise ConfigError(f"the studio needs Gradio, an optional extra: {INSTALL_HINT}") from None
    return gr


def check_port(host: str, port: int) -> None:
    """A one-line error when host:port cannot be listened on (in use, no such address, privileged)."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise ConfigError(f"--host {host} is not a name or address of this machine; use --host 127.0.0.1") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use; choose another with --port N") from None
            if exc.errno == errno.EACCES:
                raise ConfigError(f"port {port} needs administrator rights; choose --port 1024 or above") from None
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); use --host 127.0.0.1 or another "
                              "--port") from None


@dataclass
class Studio:
    """A running studio server: its address, the Gradio app, and the folder its jobs write into."""

    url: str
    app: Any
    workdir: Path
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.app.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(paths: Sequence[str], host: str = "127.0.0.1", port: int = 7860, *, root: str | Path = "runs",
          quiet: bool = True) -> Studio:
    """Serve the studio in background threads on host:port for the runs named (else those under root)."""
    gr = gradio()
    check_port(host, port)
    from .app import CSS, build_app
    from .jobs.inputs import MAX_UPLOAD_MB
    from .jobs.runs import find_runs

    runs, notes = find_runs(paths, root)
    workdir = Path(tempfile.mkdtemp(prefix="ddpmlab-studio-"))
    demo = build_app(runs, notes, workdir)
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=quiet, share=False,
                    inbrowser=False, show_error=False, ssr_mode=False, mcp_server=False, pwa=False,
                    enable_monitoring=False, footer_links=["api", "settings"], max_file_size=f"{MAX_UPLOAD_MB}mb",
                    theme=gr.themes.Default(), css=CSS)
    except OSError as exc:  # taken between the check and the launch
        shutil.rmtree(workdir, ignore_errors=True)
        raise ConfigError(f"cannot listen on {host}:{port} ({exc}); choose another with --port N") from None
    return Studio(f"http://{host}:{port}/" if ":" not in host else f"http://[{host}]:{port}/", demo, workdir, notes)


def serve(paths: Sequence[str], host: str = "127.0.0.1", port: int = 7860) -> int:
    """`ddpmlab studio`: serve until Ctrl-C; one line for each path that is not a run."""
    import warnings

    warnings.simplefilter("ignore", ResourceWarning)  # the web server's own event loops, not the user's business
    studio = start(paths, host, port)
    for note in studio.notes:
        print(f"ddpmlab studio: {note}", file=sys.stderr)
    print(f"ddpmlab studio: serving on {studio.url} (Ctrl-C stops it)", flush=True)
    try:
        studio.app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        studio.close()
    return 0


__all__ = ["Studio", "check_port", "gradio", "serve", "start"]
