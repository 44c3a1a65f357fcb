"""BatchNorm statistics of one child: after training shared weights, a child's BN statistics (the supernet's
running averages over many children) are re-estimated on a few of its own batches before it is scored."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, max_batches: int = 20, forward=None) -> None:
    """Re-estimate every BatchNorm's running statistics on ``max_batches`` batches (cumulative average).

    ``forward(x)`` runs the model (default ``model(x)``); the model is left in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    run = forward or model
    device = next(model.parameters()).device
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        run(x.to(device))
    for bn, m in zip(bns, saved):
        bn.momentum = m
    model.eval()
