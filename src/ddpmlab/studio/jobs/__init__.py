"""Every call the studio makes into the ddpmlab library, one module per job: runs (finding and loading them),
streaming (a job on a worker thread, its steps handed to the page), sampling (sample, compare, guidance sweeps),
inputs (the pictures a user brings), forward (the forward process), editing (SDEdit, inpainting, interpolation)
and records (what a run has written).

Sampling goes through sampling.generate, as `ddpmlab sample` does (with a callback for the frames), and writes
with sample_files.write_samples, so the same settings and seed give the same PNG byte for byte.
A job on a network holds streaming.NETWORK; the page's queue runs one at a time, and the lock keeps a stopped job
that is still unwinding from overlapping the next one.
"""
