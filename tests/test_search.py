"""Search loss, budget handling, the separate-weights search loop's run folder, resume and NaN handling, the CLI.

The weight-entangled search (the default) is tested in tests/test_entangled.py.
"""

import json

import pytest
import torch

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.search import SearchConfig, run_search
from hwnas.search.latency import AnalyticProxy, check_budget, latency_model, load_latency_predictor
from hwnas.search.losses import budget_penalty
from hwnas.spaces import get_space
from hwnas.supernet import Supernet

TINY = {"resolution": 16, "stages": [[24, 1, 2], [32, 2, 2]], "head_channels": 64}
TINY_SET = ["--set", "resolution=16", "--set", "stages=[[24,1,2],[32,2,2]]", "--set", "head_channels=64"]


def tiny_config(out, **kw) -> SearchConfig:
    base = dict(space="proxyless-tiny", space_params=TINY, epochs=2, warmup_epochs=1, batch_size=16, max_steps=2,
                limit_train=64, limit_val=32, out=str(out), progress=False, threads=1, supernet="separate")
    base.update(kw)
    return SearchConfig(**base)


def test_budget_penalty_is_zero_under_and_linear_above_the_budget():
    b = 4.0
    values = budget_penalty(torch.tensor([1.0, 3.99, 4.0, 5.0, 6.0, 8.0]), b).tolist()
    assert values[:3] == [0.0, 0.0, 0.0]
    assert values[3:] == pytest.approx([0.25, 0.5, 1.0])
    lat = torch.tensor(5.0, requires_grad=True)
    budget_penalty(lat, b).backward()
    assert float(lat.grad) == pytest.approx(1 / b)


def _proxy_model():
    space = get_space("proxyless-tiny", TINY)
    return latency_model(space, *load_latency_predictor(space, None))


def test_budget_below_the_fastest_architecture_is_refused():
    model = _proxy_model()
    assert model.min_ms < model.max_ms
    check_budget(model.min_ms * 1.001, model.min_ms, model.source)
    with pytest.raises(HwnasError, match=f"minimum achievable latency is {model.min_ms:.4f} ms"):
        check_budget(model.min_ms * 0.99, model.min_ms, model.source)


def test_analytic_proxy_counts_flops_and_memory():
    space = get_space("proxyless-tiny")
    proxy = AnalyticProxy()
    pos = space.positions[1]
    ms = {name: proxy.predict_op(op) for name, op in zip(pos.names, pos.ops)}
    assert ms["zero"] == 0.0
    assert ms["k3_e3"] < ms["k3_e6"] < ms["k7_e6"]


def test_search_writes_the_run_folder_and_meets_the_budget(tmp_path):
    model = _proxy_model()
    budget = model.min_ms + 0.3 * (model.max_ms - model.min_ms)
    result = run_search(tiny_config(tmp_path / "run", budget_ms=budget))
    out = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "probs.jsonl", "checkpoint.pt", "arch.json",
                 "derived.json", "probs.png", "curves.png"):
        assert (out / name).exists(), name
    summary = json.loads((out / "derived.json").read_text())
    assert summary["within_budget"] and summary["predicted_latency_ms"] <= budget
    assert summary["choices"] == result.arch.choices
    assert summary["mflops"] == pytest.approx(result.arch.cost().flops / 1e6, abs=1e-4)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["warmup", "search"]
    assert rows[0]["entropy"] == 1.0 and rows[1]["entropy"] < 1.0  # alpha moves only after the warm-up


def test_resume_continues_exactly(tmp_path):
    straight = run_search(tiny_config(tmp_path / "a", lambda_lat=0.5))
    run_search(tiny_config(tmp_path / "b", lambda_lat=0.5, stop_after=1))
    assert json.loads((tmp_path / "b" / "derived.json").read_text())["epochs_done"] == 1
    resumed = run_search(tiny_config(tmp_path / "b", lambda_lat=0.5, resume=True))
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(straight.history) == drop(resumed.history)


def test_resume_refuses_other_settings(tmp_path):
    run_search(tiny_config(tmp_path / "r", stop_after=1))
    config = (tmp_path / "r" / "config.json").read_text()
    # issue 15 case 9: every setting that changes the result, not only the shape of the run
    for change in ({"batch_size": 8}, {"lr_w": 0.1}, {"lambda_lat": 0.5}, {"lr_alpha": 0.1}, {"eta_flops": 0.1},
                   {"fit_budget": False}, {"weight_decay": 0.0}):
        (key, value), = change.items()
        with pytest.raises(HwnasError, match=rf"checkpoint was written with {key}=.*this run has {key}="):
            run_search(tiny_config(tmp_path / "r", resume=True, **change))
    assert (tmp_path / "r" / "config.json").read_text() == config  # not rewritten by a refused resume


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import hwnas.search.loop as loop

    run_search(tiny_config(tmp_path / "n", stop_after=1))
    before = (tmp_path / "n" / "checkpoint.pt").read_bytes()
    real = loop.make_step

    def diverging(mode, ctx):  # the same settings (resume refuses others), but the loss goes non-finite
        stepper = real(mode, ctx)
        step = stepper.step
        stepper.step = lambda *a, **k: {**step(*a, **k), "loss": float("nan")}
        return stepper

    monkeypatch.setattr(loop, "make_step", diverging)
    with pytest.raises(HwnasError, match="loss (nan|inf).*last good checkpoint"):
        run_search(tiny_config(tmp_path / "n", resume=True))
    assert (tmp_path / "n" / "checkpoint.pt").read_bytes() == before


def test_cli_refuses_an_impossible_budget(capsys):
    assert main(["search", *TINY_SET, "--budget-ms", "0.01", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error: budget 0.01 ms is below") and "minimum achievable latency" in err


def test_cli_search_runs_with_a_budget(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["search", *TINY_SET, "--budget-ms", "1.5", "--epochs", "2", "--warmup-epochs", "1", "--batch-size",
               "16", "--max-steps", "1", "--limit-train", "32", "--limit-val", "16", "--threads", "1",
               "--mode", "snas", "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "derived.json").read_text())
    assert summary["mode"] == "snas" and summary["predicted_latency_ms"] <= 3


def test_budget_on_derived_uses_the_argmax_childs_latency_with_the_expected_gradient():
    from hwnas.search.losses import resource_loss

    space = get_space("proxyless-tiny", TINY)
    net = Supernet(space, "proxyless")
    net.set_latency([torch.arange(len(op.names), dtype=torch.float32) for op in net.mixed], 0.0)
    with torch.no_grad():
        for op in net.mixed:
            op.alpha[-1] = 1.0  # argmax: the last (slowest) candidate, E[LAT] well below it
    slowest = sum(len(op.names) - 1 for op in net.mixed)
    budget = slowest - 1.0
    loss_d, stats = resource_loss(net, 1.0, budget, 10.0, {}, budget_on="derived")
    assert float(loss_d.detach()) == pytest.approx(slowest / budget - 1)
    assert stats["exp_latency_ms"] < budget
    loss_e, _ = resource_loss(net, 1.0, budget, 10.0, {}, budget_on="expected")
    assert float(loss_e.detach()) == 0.0  # the expectation alone is under the budget: no push
    loss_d.backward()
    grad_d = [a.grad.clone() for a in net.arch_parameters()]
    net.zero_grad()
    (net.expected("latency") / budget).backward()
    for g, a in zip(grad_d, net.arch_parameters()):
        assert torch.allclose(g, a.grad)


def test_cli_search_sizes_the_classifier_for_the_dataset(tmp_path, capsys):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (60 * i, 0, 200 if cls == "a" else 0)).save(tmp_path / "data" / cls / f"{i}.jpg")
    out = tmp_path / "run"
    rc = main(["search", *TINY_SET, "--dataset", str(tmp_path / "data"), "--budget-ms", "1.5", "--epochs", "1",
               "--warmup-epochs", "0", "--batch-size", "4", "--max-steps", "1", "--threads", "1",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "searching with num_classes=2" in capsys.readouterr().out
    assert json.loads((out / "arch.json").read_text())["space_params"]["num_classes"] == 2


def test_run_search_takes_the_level_and_returns_it_leaving_its_config_alone(tmp_path):
    cfg = tiny_config(tmp_path / "lv", supernet="entangled", epochs=2, warmup_epochs=0, child_warmup_epochs=1,
                      max_steps=1)
    before = cfg.to_dict()
    result = run_search(cfg, level=1.5)
    assert cfg.to_dict() == before  # nothing written back into the config
    assert result.level == 1.5 and result.summary["latency_level"] == 1.5
    assert json.loads((tmp_path / "lv" / "config.json").read_text())["latency_level"] == 1.5
