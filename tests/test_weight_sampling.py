"""Which child a sandwich weight step trains (hwnas.search.weight_sampling): band children stay in their band,
uniform sampling reaches every option, alpha asks the search's distribution, and a search resumes exactly."""

from __future__ import annotations

import json
import random

import pytest
import torch

from hwnas.children import latency_table
from hwnas.errors import HwnasError
from hwnas.search import SearchConfig, run_search
from hwnas.search.latency import AnalyticProxy
from hwnas.search.weight_sampling import BAND_LOW, WeightSampler
from hwnas.spaces import get_space

from test_entangled import SMALL, _config  # the small space and search settings of the entangled tests


@pytest.fixture(scope="module")
def table():
    return latency_table(get_space("proxyless-tiny", SMALL), AnalyticProxy())


def test_band_sampling_draws_only_children_predicted_inside_the_band(table):
    budget = table.min() + 0.5 * (table.max() - table.min())
    sampler = WeightSampler("band", table, budget, seed=0, sample_alpha=None)
    rng = random.Random(0)
    drawn = [sampler.sample(rng) for _ in range(300)]
    assert all(BAND_LOW * budget <= table.cost(c) <= budget for c in drawn)
    assert len(set(drawn)) > 30  # many distinct children, not one


def test_uniform_sampling_reaches_every_width_and_candidate(table):
    sampler = WeightSampler("uniform", table, None, seed=0, sample_alpha=None)
    rng = random.Random(1)
    drawn = [sampler.sample(rng) for _ in range(400)]
    for s in range(table.num_stages):
        assert {c.widths[s] for c in drawn} == set(range(table.num_widths))
    for i, names in enumerate(table.names):
        assert {c.ops[i] for c in drawn} == set(range(len(names)))
    costs = [table.cost(c) for c in drawn]
    assert max(costs) - min(costs) > 0.5 * (table.max() - table.min())  # far from one latency


def test_alpha_sampling_asks_the_search_distribution(table):
    calls = []
    sampler = WeightSampler("alpha", table, None, seed=0, sample_alpha=lambda: calls.append(1) or "child")
    assert sampler.sample(random.Random(0)) == "child" and calls == [1]


def test_bad_weight_sampling_settings_are_refused(table):
    with pytest.raises(HwnasError, match="must be one of alpha, uniform, band"):
        SearchConfig(weight_sampling="fair").check()
    with pytest.raises(HwnasError, match="'band' needs a latency budget"):
        SearchConfig(weight_sampling="band").check()
    with pytest.raises(HwnasError, match="no child of the space is predicted"):
        WeightSampler("band", table, table.min() * 0.5, seed=0, sample_alpha=None)


def test_band_sampled_search_resumes_exactly_and_an_older_checkpoint_still_resumes(table, tmp_path):
    budget = table.min() + 0.4 * (table.max() - table.min())
    full = run_search(_config(tmp_path / "full", budget_ms=budget, weight_sampling="band"))
    run_search(_config(tmp_path / "cut", budget_ms=budget, weight_sampling="band", stop_after=2))
    resumed = run_search(_config(tmp_path / "cut", budget_ms=budget, weight_sampling="band", resume=True))
    for a, b in zip(full.supernet.state_dict().values(), resumed.supernet.state_dict().values()):
        assert torch.equal(a, b)
    # another sampling changes the weights the sandwich steps train
    alpha = run_search(_config(tmp_path / "alpha", budget_ms=budget))
    assert any(not torch.equal(a, b) for a, b in zip(full.supernet.weight_parameters(),
                                                     alpha.supernet.weight_parameters()))
    # a checkpoint written before the setting existed ran with alpha sampling: it resumes as such, not as band
    old = tmp_path / "old"
    run_search(_config(old, budget_ms=budget, stop_after=1))
    state = torch.load(old / "checkpoint.pt", weights_only=True)
    config = json.loads(state["config"])
    del config["weight_sampling"]
    state["config"] = json.dumps(config)
    torch.save(state, old / "checkpoint.pt")
    with pytest.raises(HwnasError, match="weight_sampling='alpha', this run has weight_sampling='band'"):
        run_search(_config(old, budget_ms=budget, weight_sampling="band", resume=True))
    assert run_search(_config(old, budget_ms=budget, resume=True)).summary["epochs_done"] == 3
