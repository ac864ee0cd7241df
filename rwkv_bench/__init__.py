"""rwkv-bench: RWKV-4 against transformer baselines, measured.

Where each command's numbers are measured (command -> the code that measures, at most two hops):

    rwkv-bench scaling      scaling/command.py -> scaling/sweep.py (the loop) -> scaling/measure.py (one point,
                            in a child process; memory sampled by scaling/launcher.py from outside)
    rwkv-bench uncheatable  uncheatable/command.py -> uncheatable/evaluate.py -> scoring.py (bits per byte)
    rwkv-bench nlp          nlp/command.py -> nlp/evaluate.py -> lm-eval with nlp/lm_eval_model.py (our RWKV,
                            scoring in nlp/shared_prefix.py) or lm-eval's hf; files through nlp/store.py
    rwkv-bench score        commands.py -> scoring.py
    rwkv-bench kernels      commands.py -> ops/kernel_bench.py
    rwkv-bench report       report/command.py -> <scenario>/report.py (tables and figures from stored files only)

Shared homes: specs.py (one grammar for model specs: `parse` -> ModelSpec), backends/ (`load(ModelSpec)` ->
a Backend: models/rwkv4.py or transformers), options.py (dtype, device, lists; config dataclasses behind every
command's flags), recording.py (run directories: new, latest, resume, append-only CSVs, meta.json),
trackers.py (latency and memory), hub.py (the Hugging Face hub, given up on quickly offline).
"""
__version__ = "0.1.0"
