"""`torchlab generate CKPT --prompt TEXT`: continue a text with a trained language model.

The prompt is tokenised as the training text was and run through the model
to build up its hidden state; then one token at a time is chosen from the
predicted distribution and fed back in. `--temperature 0` always takes the
most likely token (greedy); otherwise logits are divided by the temperature
(below 1: safer, above 1: more surprising) and, with `--top-k K`, only the K
most likely tokens are kept before sampling. `--next K` answers the notes'
question directly: the K most likely next tokens and their probabilities.
"""

from __future__ import annotations

import json

import torch

from torchlab import checkpoint
from torchlab.data.text import UNK, Vocab, join_words, tokenize
from torchlab.runtime import pick_device
from torchlab.errors import UserError
from torchlab.logger import say
from torchlab.models.rnn import LanguageModel, LMConfig


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="a .pt file (or run directory) from `torchlab train lm`")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--tokens", type=int, default=50, help="how many tokens to add (default 50)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="0: always the most likely token (greedy); higher: more varied (default 0.8)")
    p.add_argument("--top-k", type=int, default=0, help="sample only among the K most likely tokens (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling: the same seed gives the same text")
    p.add_argument("--next", type=int, default=0, metavar="K",
                   help="instead of generating, list the K most likely next tokens with their probabilities")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def check_flags(args) -> None:
    if not args.prompt.strip():
        raise UserError("--prompt is empty", "give some text to continue, e.g. --prompt 'The Time'")
    for flag, value, ok, need in (("--tokens", args.tokens, args.tokens >= 1, "at least 1"),
                                  ("--temperature", args.temperature, args.temperature >= 0, "0 or more"),
                                  ("--top-k", args.top_k, args.top_k >= 0, "0 or more"),
                                  ("--next", args.next, args.next >= 0, "0 or more")):
        if not ok:
            raise UserError(f"{flag} {value}: must be {need}", "see `torchlab generate --help`")


def load_model(path: str, device: torch.device) -> tuple[LanguageModel, Vocab]:
    ckpt = checkpoint.load(path, task="lm")
    try:
        model = LanguageModel(LMConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model_state"])
        vocab = Vocab.from_dict(ckpt["vocab"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{ckpt['path']}: not a usable language-model checkpoint ({str(e).splitlines()[0][:120]})",
                        "use a checkpoint written by `torchlab train lm`") from None
    return model.to(device).eval(), vocab


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
    logits, _ = model(torch.tensor([ids], device=device))
    probs = logits[0, -1].float().softmax(0).cpu()
    probs[0] = 0.0  # <unk> is not a real next token; the others keep their probabilities as predicted
    values, indices = probs.topk(min(k, probs.numel() - 1))
    return [(int(i), float(v)) for v, i in zip(values, indices)]


def run(args) -> int:
    check_flags(args)
    device = pick_device(args.device)
    model, vocab = load_model(args.checkpoint, device)
    tokens = tokenize(args.prompt, vocab.level)
    ids, unknown = vocab.lookup(tokens)
    if unknown:
        say(f"warning: not in the vocabulary, read as {UNK}: " + " ".join(repr(t) for t in unknown[:20]))
    if args.next:
        top = [{"token": vocab.tokens[i], "prob": p} for i, p in next_tokens(model, ids, args.next, device)]
        if args.json:
            print(json.dumps({"prompt": args.prompt, "next": top, "unknown": unknown}, ensure_ascii=False, indent=2))
        else:
            print(f"after {args.prompt!r}, the most likely next tokens:")
            print("\n".join(f"  {t['token']!r:<12} {t['prob']:.2%}" for t in top))
        return 0
    new = [vocab.tokens[i] for i in continue_text(model, ids, args.tokens, args.temperature, args.top_k,
                                                     args.seed, device)]
    text = args.prompt + "".join(new) if vocab.level == "char" else join_words(tokens + new)
    if args.json:
        print(json.dumps({"prompt": args.prompt, "text": text, "new_tokens": new, "unknown": unknown},
                         ensure_ascii=False, indent=2))
    else:
        print(text)
    return 0
