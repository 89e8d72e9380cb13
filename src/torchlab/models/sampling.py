"""Choosing tokens from a language model, on token ids (turning text into ids is the data layer's job).

The prompt is run through the model to build up its hidden state; then one token at a time is chosen from
the predicted distribution and fed back in. Temperature 0 always takes the most likely token (greedy);
otherwise logits are divided by the temperature (below 1: safer, above 1: more surprising) and, with top_k,
only the k most likely tokens are kept before sampling. Id 0 is <unk>, which is never produced.
"""

from __future__ import annotations

import torch

from torchlab.models.rnn import LanguageModel


def pick(logits: torch.Tensor, temperature: float, top_k: int, gen: torch.Generator) -> int:
    """One token id from next-token logits [V]; <unk> (id 0) is never produced."""
    logits = logits.float().clone()
    logits[0] = float("-inf")
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.numel() - 1)).values[-1]
        logits[logits < kth] = float("-inf")  # keep the k best (ties at the edge kept too)
    probs = logits.softmax(0).cpu()
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.inference_mode()
def continue_text(model: LanguageModel, ids: list[int], n: int, temperature: float, top_k: int,
                  seed: int, device: torch.device) -> list[int]:
    """Feed the prompt ids, then `n` tokens chosen one at a time; returns the new ids."""
    gen = torch.Generator().manual_seed(seed)
    logits, state = model(torch.tensor([ids], device=device))  # [1, P, V]: the prompt builds up the state
    new = []
    for _ in range(n):
        token = pick(logits[0, -1], temperature, top_k, gen)
        new.append(token)
        logits, state = model(torch.tensor([[token]], device=device), state)  # [1, 1, V]
    return new


@torch.inference_mode()
def next_tokens(model: LanguageModel, ids: list[int], k: int, device: torch.device) -> list[tuple[int, float]]:
    """The k most likely next token ids after `ids`, with their probabilities, <unk> left out."""
    logits, _ = model(torch.tensor([ids], device=device))
    probs = logits[0, -1].float().softmax(0).cpu()
    probs[0] = 0.0  # <unk> is not a real next token; the others keep their probabilities as predicted
    values, indices = probs.topk(min(k, probs.numel() - 1))
    return [(int(i), float(v)) for v, i in zip(values, indices)]
