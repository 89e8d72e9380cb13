"""The optimizer and learning-rate schedule a run's config names, the same for every task."""

from __future__ import annotations

import torch


def build_optimizer(cfg, model: torch.nn.Module, total_steps: int):
    """(optimizer, scheduler or None) for `cfg.optimizer` and `cfg.schedule` over `total_steps` steps."""
    params = model.parameters()
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                                    weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    elif cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                                        pct_start=0.25)
    else:
        scheduler = None
    return optimizer, scheduler
