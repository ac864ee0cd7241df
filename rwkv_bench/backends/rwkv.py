"""Our recurrent models (RWKV-4, RWKV-7: any models.recurrent.RecurrentLM): chunked sequence mode for prompts
and scoring, recurrent mode for generation. Nothing here asks which RWKV it holds, except for the name of the
WKV implementation that runs it (KERNEL_NAMES)."""
from __future__ import annotations

import torch

from ..models.recurrent import RecurrentLM
from ..tokenizer import Tokenizer
from .base import Backend, as_batch, module_bytes


def _wkv4_name(device) -> str:
    from ..ops.wkv import implementation_name

    return implementation_name(device)


def _wkv7_name(device) -> str:
    from ..ops.wkv7 import implementation_name

    return implementation_name(device)


# model.version -> what says which WKV implementation (cpu-kernel, cuda-kernel, reference) runs it
KERNEL_NAMES = {"rwkv4": _wkv4_name, "rwkv7": _wkv7_name}


class RWKVBackend(Backend):
    family = "rwkv"
    max_context = None

    def __init__(self, model: RecurrentLM, tokenizer: Tokenizer, spec: str, *, random_weights: bool,
                 device="cpu", chunk_size: int = 1024, bos_token_id: int = 0):
        super().__init__(model, tokenizer, spec, random_weights=random_weights, device=device)
        self.chunk_size = chunk_size
        self.bos_token_id = bos_token_id  # token 0: <|endoftext|> in the NeoX and the World vocabularies

    @property
    def implementation(self) -> str:
        return f"rwkv_bench.{self.model.version}[{KERNEL_NAMES[self.model.version](self.device)}]"

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def protocol(self, stride: int | None = None) -> str:
        return "rwkv: one pass over the whole text, state carried across chunks (no window)"

    def tensor(self, ids) -> torch.Tensor:
        return as_batch(ids, self.device)

    @torch.no_grad()
    def token_logprobs(self, ids: list[int], stride: int | None = None) -> torch.Tensor:
        """Chunk by chunk with the state carried, so a text of any length fits in O(chunk x vocab) memory."""
        inputs = [self.bos_token_id] + ids[:-1]
        state, out = None, []
        for s in range(0, len(ids), self.chunk_size):
            logits, state = self.model(self.tensor(inputs[s:s + self.chunk_size]), state, chunk_size=self.chunk_size)
            targets = self.tensor(ids[s:s + self.chunk_size])
            logp = torch.log_softmax(logits.float(), dim=-1)
            out.append(logp.gather(-1, targets.unsqueeze(-1))[0, :, 0].double().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def start(self, ids: list[int]):
        logits, state = self.model(self.tensor(ids), chunk_size=self.chunk_size, last_only=True)
        return logits[0, -1], state

    @torch.no_grad()
    def step(self, token: int, cache):
        logits, state = self.model(self.tensor([token]), cache, mode="recurrent")
        return logits[0, -1], state

    @torch.no_grad()
    def start_batch(self, ids: torch.Tensor):
        logits, state = self.model(ids.to(self.device), chunk_size=self.chunk_size, last_only=True)
        return logits[:, -1], state

    @torch.no_grad()
    def step_batch(self, tokens: torch.Tensor, cache):
        """Updates `cache` in place (a server owns its states; a copy of B states per step is not its cost)."""
        x = self.model.hidden(tokens.reshape(-1, 1).to(self.device), cache, recurrent=True)
        return self.model.logits(x)[:, -1], cache

    def repeat_cache(self, cache, batch: int):
        return cache.repeat_interleave(batch, dim=self.model.state_batch_dim)

    def sequence_state_bytes(self, T: int) -> int:
        return self.model.state_bytes(1)

    def weights_bytes(self) -> int:
        return module_bytes(self.model)
