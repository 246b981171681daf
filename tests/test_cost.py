"""What a network costs: parameters and multiply-accumulates against their formulas, and CPU
timings that are measured (positive, in their units)."""

from __future__ import annotations

import torch
from torch import nn

from sdkd_core.cost import count_macs, count_params, measure


def test_params_and_macs_equal_their_formulas():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 16 * 16, 10))
    assert count_params(net) == (3 * 8 * 9 + 8) + (8 * 16 * 16 * 10 + 10)
    conv_macs = 16 * 16 * 8 * 3 * 9  # one multiply-accumulate per kernel tap and output
    linear_macs = 8 * 16 * 16 * 10
    assert count_macs(net, torch.randn(1, 3, 16, 16)) == conv_macs + linear_macs


def test_measure_times_one_image_and_a_batch_on_the_cpu():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    cost = measure(net, (1, 28, 28), batch=8, repeats=3, budget_s=1.0)
    assert cost.params == count_params(net) and cost.macs == count_macs(
        net, torch.randn(1, 1, 28, 28))
    assert cost.latency_ms > 0 and cost.throughput > 0 and cost.batch == 8
    assert set(cost.row()) == {"params", "macs", "latency_ms", "throughput", "batch", "threads"}
