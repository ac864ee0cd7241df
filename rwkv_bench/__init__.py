"""rwkv-bench: RWKV-4 and RWKV-7 against transformer (and Mamba) baselines, measured.

Where each command's numbers are measured (command -> the code that measures, at most two hops):

    rwkv-bench scaling      scaling/command.py -> scaling/sweep.py (the loop) -> scaling/measure.py (one point,
                            in a child process; memory sampled by scaling/launcher.py from outside);
                            files through scaling/store.py, options checked once in scaling/config.py
    rwkv-bench uncheatable  uncheatable/command.py -> uncheatable/evaluate.py -> scoring.py (bits per byte);
                            texts from uncheatable/sources/ (one plug-in per source), files through uncheatable/store.py
    rwkv-bench nlp          nlp/command.py -> nlp/evaluate.py -> lm-eval with nlp/lm_eval_model.py (our RWKV,
                            scoring in nlp/shared_prefix.py) or lm-eval's hf; files through nlp/store.py
    rwkv-bench score        commands.py -> scoring.py
    rwkv-bench kernels      commands.py -> ops/kernel_bench.py
    rwkv-bench report       report/command.py -> report/build.py's RENDERERS -> <scenario>/report.py (tables and
                            figures from stored files only)

Shared homes: specs.py (one grammar for model specs: `parse` -> ModelSpec), backends/ (`load(ModelSpec)` ->
a Backend: our models/rwkv4.py and models/rwkv7.py, both models/recurrent.py's RecurrentLM, or transformers),
options.py (dtype, device, lists; config dataclasses behind every command's flags), recording.py (run
directories: new, latest, resume, append-only CSVs, meta.json), runlock.py (one live writer per run
directory), fileio.py (atomic writes), trackers.py (latency and memory), allocator.py (glibc's heap as
measurements need it), console.py (warnings and the one progress bar), library_internals.py (what we rely on
in other libraries beyond their public API, each checked by a test), hub.py (the Hugging Face hub, given up
on quickly offline).
"""
__version__ = "0.1.0"
