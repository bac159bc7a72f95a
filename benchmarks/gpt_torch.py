"""The GPT of benchmarks/gpt_style.py written with PyTorch tensors, for benchmarks/bench_gpt.py.

Same model, same numbers: token and position embeddings, RMSNorm without a gain
(``x * (mean(x^2) + 1e-5)^-0.5``), one layer of causal 4-head self-attention, a ReLU MLP four
times as wide as the model, a language-model head, the mean cross-entropy of a name's
next-token predictions, and Adam with gpt_style's betas and epsilon. The weights are copied
from gpt_style's (so both start from the same numbers) and everything is float64, so the
losses can be compared to 1e-9.

The scalar model reads a name one token at a time and gets causality from its key/value
cache; here the whole name goes through at once and a causal mask hides the future. The sums
are the same, only their order (and so the last bits) may differ.

torch is imported only when a ``TorchGPT`` is made, so importing this module never needs it.
"""

from __future__ import annotations

import gpt_style as gpt


class TorchGPT:
    """gpt_style's model and Adam on float64 tensors, starting from gpt_style's ``params``."""

    def __init__(self, params: dict[str, list[list]], lr: float = 0.01):
        import torch

        self.torch = torch
        # One tensor per weight matrix, rows as in gpt_style (a Linear layer computes x @ W.T).
        self.weights = {
            name: torch.tensor(
                [[_number(p) for p in row] for row in rows], dtype=torch.float64, requires_grad=True
            )
            for name, rows in params.items()
        }
        self.optimizer = torch.optim.Adam(
            self.weights.values(), lr=lr, betas=(gpt.BETA1, gpt.BETA2), eps=gpt.ADAM_EPS
        )
        n = gpt.BLOCK_SIZE
        # True above the diagonal: position t must not see the positions after it.
        self.future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)

    def loss(self, tokens: list[int]):
        """Mean cross-entropy of predicting each next token of one name, as gpt_style.name_loss."""
        torch, w = self.torch, self.weights
        n = min(gpt.BLOCK_SIZE, len(tokens) - 1)
        inputs = torch.tensor(tokens[:n])
        targets = torch.tensor(tokens[1 : n + 1])
        x = w["token_embedding"][inputs] + w["position_embedding"][:n]
        x = _rmsnorm(x)
        for layer in range(gpt.N_LAYER):
            residual = x
            x = _rmsnorm(x)
            x = self._attention(x, layer) @ w[f"layer{layer}.attn_out"].T + residual
            residual = x
            x = _rmsnorm(x)
            x = torch.relu(x @ w[f"layer{layer}.mlp_up"].T) @ w[f"layer{layer}.mlp_down"].T + residual
        logits = x @ w["lm_head"].T
        return torch.nn.functional.cross_entropy(logits, targets)  # the mean over the n predictions

    def _attention(self, x, layer: int):
        """Causal multi-head self-attention of the ``n`` positions of ``x`` (shape n x N_EMBD)."""
        torch, w = self.torch, self.weights
        n = x.shape[0]

        def heads(name):  # (n, N_EMBD) -> (N_HEAD, n, HEAD_DIM)
            return (x @ w[f"layer{layer}.{name}"].T).view(n, gpt.N_HEAD, gpt.HEAD_DIM).transpose(0, 1)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = q @ k.transpose(1, 2) / gpt.HEAD_DIM**0.5
        scores = scores.masked_fill(self.future[:n, :n], float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v  # (N_HEAD, n, HEAD_DIM)
        return out.transpose(0, 1).reshape(n, gpt.N_EMBD)  # the heads side by side, as gpt_style

    def step(self, tokens: list[int], lr: float) -> float:
        """One step on one name (loss, backward, Adam with learning rate ``lr``); returns the loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.loss(tokens)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()


def _rmsnorm(x):
    return x * ((x * x).mean(dim=-1, keepdim=True) + 1e-5) ** -0.5


def _number(p) -> float:
    """A weight of gpt_style's params as a float, whatever the engine (or a plain float)."""
    return float(getattr(p, "data", p))
