"""The page's event handlers, one module per tab (and `common` for what they share): read the controls, call
jobs, turn the results into what the components show.

Every mistake reaches the page as one line (a gr.Error toast), never as a traceback; the server keeps serving.
No `from __future__ import annotations` in these modules: Gradio reads the `gr.Request` annotation of a handler
at run time. Gradio also publishes a handler's docstring as its API endpoint's description.
"""
