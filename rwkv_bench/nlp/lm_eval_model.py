"""rwkv-bench's lm-evaluation-harness model ("rwkv-bench"): any RecurrentLM (our RWKV-4, RWKV-7), its state
reused across requests.

lm-eval asks three things of a model:
- `loglikelihood(context, continuation)`: multiple-choice tasks send one request per choice, all with the
  same context; each distinct context runs once and its continuations are scored from copies of its state,
  contexts sharing a prefix share its work (shared_prefix.py);
- `loglikelihood_rolling(text)`: every token scored, the first conditioned on the end-of-text token; this
  is exactly `rwkv_bench.scoring.score_text` (a recurrent model has no context window to slide);
- `generate_until(context, gen_kwargs)`: greedy decoding in recurrent mode until a stop sequence, the
  end-of-text token or `max_gen_toks`.
Its TokenMeter (meter.py) counts the positions it ran and what re-encoding every request would run.

Use it from lm-eval's own CLI with `python -m rwkv_bench.nlp.lm_eval_cli --model rwkv-bench
--model_args pretrained=SPEC ...` (SPEC as everywhere in rwkv-bench: preset, path or hub id). It runs on
CUDA when available, else on the CPU, unless `--device` says otherwise.

Data parallel: launched by torchrun or `accelerate launch --multi_gpu` (both set RANK / WORLD_SIZE /
LOCAL_RANK), the model joins the process group (`rwkv_bench.distributed`; what lm-eval gathers goes over
gloo on the CPU), reports that rank and world size to lm-eval and implements lm-eval's `all_gather` /
`gather_object` / `barrier` with torch.distributed, as lm-eval's `hf` model does with accelerate. lm-eval
then gives each rank every world_size-th document (all requests of a document, so all continuations of a
context, stay on one rank and state reuse works within the shard) and gathers the per-document metrics on
rank 0. Each rank computes on its LOCAL_RANK's GPU, or on CPU with its share of the cores. lm-eval pads the
ranks with fewer requests to equal counts; this model has no collective inside a forward pass, so it
answers those copies without running them (library_internals.strip_rank_padding), and its counters count
real requests only.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from .. import distributed
from ..errors import UserError
from ..models.recurrent import RecurrentLM
from ..options import parse_number, positive
from . import MODEL_NAME
from ..library_internals import strip_rank_padding
from .meter import TokenMeter
from .shared_prefix import SharedPrefixScorer

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8


def pick_device(device: str | None) -> str:
    """The device to run on: CUDA when available, else the CPU, unless told. lm-eval's CLI asks for
    "cuda:0" when --device is not given, so on a machine without CUDA a plain "cuda"/"cuda:0" falls back to
    the CPU (with a warning) instead of failing, as lm-eval's own hf model does; another cuda:N fails."""
    if device is None or str(device).strip() == "":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device).strip()
    if device in ("cuda", "cuda:0") and not torch.cuda.is_available():
        log.warning("device %r requested but CUDA is not available: running on the CPU", device)
        return "cpu"
    return device


def parse_batch_size(value) -> int:
    if value is None or str(value).startswith("auto"):
        return DEFAULT_BATCH_SIZE
    return positive(parse_number(value, "batch_size", int), "batch_size")


def parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UserError(f"expected true or false, got {value!r}")


def load_backend(pretrained: str | None, *, device, dtype: str, tokenizer, chunk_size, seed, dist):
    """model_args -> the backend of a spec (this rank's device under torchrun)."""
    if not pretrained:
        raise UserError("rwkv-bench needs pretrained=SPEC (a preset such as rwkv4-169m, a path or a hub id)")
    from ..backends import resolve
    from ..options import parse_device, parse_dtype

    device = distributed.device_for(pick_device(device), dist)
    return resolve(str(pretrained), device=parse_device(device), dtype=parse_dtype(dtype), tokenizer=tokenizer,
                   chunk_size=int(chunk_size), seed=int(seed))


def holds_recurrent_lm(backend) -> bool:
    """Whether this model runs a backend: ours hold a RecurrentLM, whatever its version."""
    return isinstance(getattr(backend, "model", None), RecurrentLM)


@register_model(MODEL_NAME)
class RWKVBenchLM(TemplateLM):
    """lm-eval model for rwkv-bench's recurrent models (any spec `rwkv_bench.backends.resolve` turns into a
    backend holding a RecurrentLM).

    model_args: pretrained=SPEC (required unless `backend` is given), tokenizer=, dtype=float32,
    chunk_size=1024, state_reuse=true (false: every request from scratch, for checking), max_gen_toks=256;
    batch_size (rows per forward pass: context segments or continuations) and device (default: cuda when
    available, else cpu) come from lm-eval's own flags.
    """

    def __init__(self, pretrained: str | None = None, *, backend=None, tokenizer: str | None = None,
                 device: str | None = None, dtype: str = "float32", batch_size=DEFAULT_BATCH_SIZE,
                 max_batch_size=None, chunk_size: int = 1024, state_reuse=True, max_gen_toks: int = 256,
                 seed: int = 0, **unused):
        super().__init__()
        if unused:
            log.warning("rwkv-bench model ignores model_args %s", sorted(unused))
        # torchrun / accelerate launch: join the process group (once), take this rank's cores or GPU
        self.dist = distributed.init() if distributed.from_env().enabled else distributed.Dist()
        self._rank, self._world_size = self.dist.rank, self.dist.world_size
        if backend is None:
            backend = load_backend(pretrained, device=device, dtype=dtype, tokenizer=tokenizer,
                                   chunk_size=chunk_size, seed=seed, dist=self.dist)
        if not holds_recurrent_lm(backend):
            raise UserError(f"{backend.spec!r} is a {backend.family} model run by {backend.implementation}; the "
                            f"{MODEL_NAME} model runs rwkv-bench's recurrent models only: use lm-eval's --model hf")
        self.backend = backend
        self.model: RecurrentLM = backend.model
        self.tokenizer = backend.tokenizer
        self._device = backend.device
        self.batch_size = parse_batch_size(batch_size)
        self.state_reuse = parse_bool(state_reuse)
        self._max_gen_toks = int(max_gen_toks)
        self.meter = TokenMeter(device=self._device)
        self.chunk_size = backend.chunk_size

    def scorer(self) -> SharedPrefixScorer:
        return SharedPrefixScorer(self.model, device=self.device, batch_size=self.batch_size,
                                  chunk_size=self.chunk_size, counts=self.meter["loglikelihood"])

    # -- what lm-eval reads --

    @property
    def eot_token_id(self) -> int:
        return self.backend.bos_token_id  # <|endoftext|> (token 0) for the Pile models

    @property
    def max_length(self) -> int:
        return 1 << 30  # no context window: the state carries everything

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.backend.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    def get_model_info(self) -> dict:
        return {"rwkv_bench": {**self.backend.describe(), "state_reuse": self.state_reuse,
                               "batch_size": self.batch_size, "chunk_size": self.chunk_size}}

    # -- lm-eval's data-parallel contract (used by its evaluator when world_size > 1) --

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor, concatenated along dim 0 in rank order (a 0-d tensor counts as one element).
        lm-eval gathers only request counts this way: they travel over gloo on the CPU, so ranks that share a
        GPU (more ranks than GPUs, which NCCL refuses) work too."""
        if not self.dist.enabled:
            return tensor
        import torch.distributed as tdist

        local = tensor.detach().cpu()
        local = local.reshape(1) if local.dim() == 0 else local.contiguous()
        out = [torch.empty_like(local) for _ in range(self.dist.world_size)]
        tdist.all_gather(out, local)
        return torch.cat(out).to(tensor.device)

    def gather_object(self, obj, dst: int = 0):
        return distributed.gather_objects(obj, self.dist, dst=dst)

    def barrier(self) -> None:
        distributed.barrier(self.dist)

    def _unpadded(self, kind: str, method, requests, disable_tqdm: bool):
        real, extra = strip_rank_padding(requests, self.dist.enabled)
        out = self.meter.timed(kind, method, real, disable_tqdm=disable_tqdm)
        return list(out) + [out[-1]] * extra if extra else out

    def _tensor(self, ids) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)

    # -- loglikelihood --

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._unpadded("loglikelihood", super().loglikelihood, requests, disable_tqdm)

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """requests: [((context, continuation) strings, context tokens, continuation tokens)], as lm-eval's
        TemplateLM.loglikelihood tokenises them."""
        counts = self.meter["loglikelihood"]
        scorer = self.scorer()
        by_context: dict[tuple, list[tuple]] = defaultdict(list)
        seen = set()
        for _, ctx, cont in requests:
            ctx, cont = tuple(ctx), tuple(cont)
            if not ctx:
                raise ValueError("empty context: lm-eval should have put the end-of-text token there")
            counts.tokens_reencode += len(ctx) + len(cont) - 1
            if cont and (ctx, cont) not in seen:
                seen.add((ctx, cont))
                by_context[ctx].append(cont)
        results = {}
        if self.state_reuse:
            with tqdm(total=len(by_context), disable=disable_tqdm, desc="rwkv-bench loglikelihood (contexts)") as bar:
                results = scorer.score(by_context, progress=bar)
        out = []
        for request_str, ctx, cont in tqdm(requests, disable=disable_tqdm or self.state_reuse,
                                           desc="rwkv-bench loglikelihood (from scratch)"):
            if not cont:
                answer = (0.0, True)
            elif self.state_reuse:
                answer = results[(tuple(ctx), tuple(cont))]
            else:
                answer = scorer.from_scratch(tuple(ctx), tuple(cont))
            out.append(answer)
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return out

    # -- loglikelihood_rolling --

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._unpadded("loglikelihood_rolling", self._rolling, requests, disable_tqdm)

    def _rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The whole text in one pass (chunked, state carried): the same numbers as `rwkv-bench score`."""
        counts = self.meter["loglikelihood_rolling"]
        out = []
        for (string,) in tqdm([r.args for r in requests], disable=disable_tqdm, desc="rwkv-bench rolling"):
            ids = self.tok_encode(string)
            total = float(self.backend.token_logprobs(ids).sum()) if ids else 0.0
            counts.count_unshared(len(ids), self.chunk_size)
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return out

    # -- generate_until --

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._unpadded("generate_until", self._generate, requests, disable_tqdm)

    @torch.no_grad()
    def _generate(self, requests, disable_tqdm: bool = False) -> list[str]:
        from lm_eval.models.utils import handle_stop_sequences

        args = [r.args for r in requests]
        out: list[str | None] = [None] * len(args)
        eos = self.tok_decode([self.eot_token_id])
        warned = False
        pbar = tqdm(total=len(args), disable=disable_tqdm, desc="rwkv-bench generate_until")
        for start in range(0, len(args), self.batch_size):
            rows = []
            for i in range(start, min(start + self.batch_size, len(args))):
                context, gen_kwargs = args[i]
                kwargs = dict(gen_kwargs or {})
                if kwargs.get("do_sample") and not warned:
                    log.warning("rwkv-bench decodes greedily; do_sample/temperature are ignored")
                    warned = True
                until = handle_stop_sequences(kwargs.get("until"), eos=eos)
                max_new = int(kwargs.get("max_gen_toks") or kwargs.get("max_new_tokens") or self.max_gen_toks)
                rows.append((i, context, until, max_new))
            for i, text in self._generate_batch(rows):
                out[i] = text
                self.cache_hook.add_partial("generate_until", args[i], text)
                pbar.update(1)
        pbar.close()
        return out

    def _generate_batch(self, rows):
        """Prefill each prompt (parallel mode), then decode the batch one token per step (recurrent mode),
        dropping rows from the batch as they finish."""
        from lm_eval.models.utils import postprocess_generated_text

        model, counts = self.model, self.meter["generate_until"]
        states, last = [], []
        for _, context, _, _ in rows:
            ids = self.tok_encode(context) or [self.eot_token_id]
            logits, state = model(self._tensor(ids), None, chunk_size=self.chunk_size, last_only=True)
            counts.count_unshared(len(ids), self.chunk_size)
            states.append(state)
            last.append(logits[0, -1])
        state, logits = model.cat_rows(states), torch.stack(last)
        generated = [[] for _ in rows]
        active = list(range(len(rows)))
        texts = [""] * len(rows)
        while active:
            next_tokens = logits.argmax(-1).tolist()
            keep = []
            for slot, r in enumerate(active):
                token = next_tokens[slot]
                _, _, until, max_new = rows[r]
                if token == self.eot_token_id:
                    continue
                generated[r].append(token)
                texts[r] = self.tok_decode(generated[r])
                if any(s and s in texts[r] for s in until) or len(generated[r]) >= max_new:
                    continue
                keep.append(slot)
            if not keep:
                break
            index = torch.tensor(keep, device=self.device)
            active = [active[s] for s in keep]
            tokens = torch.tensor([[generated[r][-1]] for r in active], dtype=torch.long, device=self.device)
            logits, state = model(tokens, model.select_rows(state, index), mode="recurrent")
            logits = logits[:, -1]
            counts.tokens_processed += len(active)
            counts.tokens_reencode += len(active)
            counts.forward_passes += 1
        for r, (i, _, until, _) in enumerate(rows):
            yield i, postprocess_generated_text(texts[r], until, None)
