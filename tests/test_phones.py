"""Public phone data of the FBNet space: rows load and build, import, whole-model predictor."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.arch import Architecture
from hwnas.blocks import ChannelShuffle
from hwnas.builder import build_model
from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.latency_data import read_device, read_model_rows
from hwnas.phones import import_phone_csv, read_phone_csv, read_whole_model_data
from hwnas.predictors import load_predictor
from hwnas.predictors.differentiable import expected_latency, fixed_latency, latency_tensors
from hwnas.predictors.whole_model import fit_whole_model
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
HEADER = "arch_id,ops,pixel2_ms,samsung_a50_ms,samsung_s7_ms,essential_ph_1_ms,pixel3_ms,raspi4_ms,gold_6226_ms"
ROW0 = ("0,k5_e6 skip k3_e1_g2 skip k5_e1 skip skip skip k5_e6 k5_e1 k3_e1_g2 k5_e1 k5_e6 k3_e6 k3_e3 k5_e6 "
        "k3_e6 k3_e3 k5_e1 k3_e3 k5_e1 k5_e1_g2,28,56,100,31,17.5577,30.2529,111.672")
ROW1 = ("1,k5_e1_g2 k3_e6 k5_e1_g2 k5_e1_g2 k3_e1 k5_e1 k5_e6 k5_e1_g2 k5_e1_g2 k3_e3 k3_e1 k3_e3 k5_e1 "
        "k5_e1_g2 k3_e1_g2 k3_e6 k5_e6 k3_e3 k5_e3 k3_e1 k5_e1 k3_e1,28,86,91,29,17.1345,31.1756,97.4796")
SOURCES = [ROOT / "latency_data/phones/pixel3-models.csv",
           ROOT.parent / "shared/phones/fbnet_cifar100_latency.csv"]  # ../shared, beside the clone


def _csv(tmp_path, *rows) -> Path:
    path = tmp_path / "phones.csv"
    path.write_text("\n".join((HEADER,) + rows) + "\n")
    return path


def test_csv_row_loads_and_builds_the_fbnet_network(tmp_path):
    table = read_phone_csv(_csv(tmp_path, ROW0, ROW1))
    assert table.arch_ids == [0, 1] and table.latency["pixel3_ms"][1] == pytest.approx(17.1345)
    arch = Architecture.from_dict({"space": "fbnet-cifar100", "choices": list(table.choices[0])})
    model = build_model(arch).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    assert arch.cost().params == sum(p.numel() for p in model.parameters())
    # layer 2 is k3_e1_g2 (24 -> 24, stride 1): grouped 1x1 convs with a shuffle after the first
    ir = model[1 + 2]
    convs = [m for m in ir.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.groups for c in convs] == [2, 24, 2] and any(isinstance(m, ChannelShuffle) for m in ir.modules())
    # layer 1 is skip with 16 -> 24 channels: a 1x1 conv + BN + ReLU; layer 3 (24 -> 24, stride 1) is the identity
    assert isinstance(model[1 + 1][0], torch.nn.Conv2d) and model[1 + 1][0].kernel_size == (1, 1)
    assert isinstance(model[1 + 3], torch.nn.Identity)


def test_fbnet_settings_match_the_published_space():
    cifar, imagenet = get_space("fbnet-cifar100"), get_space("fbnet-imagenet")
    for space, res, strides, head in ((cifar, 32, [1, 1, 2, 2, 1, 2, 1], 1504),
                                      (imagenet, 224, [1, 2, 2, 2, 1, 2, 1], 1984)):
        assert len(space.positions) == 22 and space.stem[0].h == res
        firsts = [next(p for p in space.positions if p.stage == s) for s in range(7)]
        assert [p.ops[0].stride for p in firsts] == strides
        assert [p.ops[0].c_out for p in firsts] == [16, 24, 32, 64, 112, 184, 352]
        assert space.head[0].c_out == head and space.head[-1].c_out == (100 if space is cifar else 1000)
    assert cifar.stem[0].stride == 1 and imagenet.stem[0].stride == 2
    assert cifar.positions[-1].ops[0].out_h == 4 and imagenet.positions[-1].ops[0].out_h == 7


@pytest.mark.parametrize("bad, what", [
    ("2,k5_e6 skip,1,2,3,4,5,6,7", "'ops' has 2 names"),
    ("2," + ROW0.split(",")[1].replace("k5_e6", "k7_e6", 1) + ",1,2,3,4,5,6,7", "k7_e6"),
    ("2," + ROW0.split(",", 2)[1] + ",28,fast,100,31,17.5,30.2,111.6", "'samsung_a50_ms' must be a number"),
    ("2," + ROW0.split(",", 2)[1] + ",28,56,100", "expected 9 columns"),
    ("1," + ROW0.split(",", 1)[1], "duplicate arch_id 1"),
])
def test_importing_a_corrupted_row_names_the_line(tmp_path, capsys, bad, what):
    path = _csv(tmp_path, ROW0, ROW1, bad)
    with pytest.raises(HwnasError, match=rf"line 4: corrupted row: .*{what}"):
        read_phone_csv(path)
    assert main(["phones", "import", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error: ") and "line 4" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_import_writes_the_shared_whole_model_format(tmp_path):
    written = import_phone_csv(_csv(tmp_path, ROW0, ROW1), tmp_path / "out")
    assert len(written) == 14
    rows = read_model_rows(tmp_path / "out/samsung_a50-models.csv")
    assert [r.median_ms for r in rows] == [56.0, 86.0] and rows[1].choices[0] == "k5_e1_g2"
    assert rows[0].space == "fbnet-cifar100" and rows[0].arch_file == "phones.csv#0"
    desc = read_device(tmp_path / "out/pixel3.device.json")
    assert desc["name"] == "pixel3" and "lookup table" in desc["measured"] and "HW-NAS-Bench" in desc["source"]
    choices, y = read_whole_model_data(tmp_path / "out/pixel3-models.csv")
    assert y.tolist() == [17.5577, 17.1345] and len(choices[0]) == 22


def _synthetic(n: int, seed: int = 0):
    """Random architectures whose latency is an exact sum of a random per-operator table."""
    space = get_space("fbnet-cifar100")
    rng = random.Random(seed)
    table = {op: rng.uniform(0.0, 2.0) for pos in space.positions for op in pos.ops}
    choices = [[rng.choice(p.names) for p in space.positions] for _ in range(n)]
    y = np.array([3.0 + sum(table[p.op(c)] for p, c in zip(space.positions, ch)) for ch in choices])
    return space, choices, y


def test_exact_sums_are_recovered_and_the_file_round_trips(tmp_path):
    space, choices, y = _synthetic(700)
    pred = fit_whole_model(space, choices[:500], y[:500], {"name": "synthetic"},  # with the validation search
                           feature_sets=[(), ("stage",)])
    assert np.max(np.abs(pred.predict_many_choices(choices) - y)) < 1e-6
    assert min(pred.entries.values()) >= 0.0
    pred.save(tmp_path / "p.json")
    loaded = load_predictor(tmp_path / "p.json", space="fbnet-cifar100")
    arch = Architecture("fbnet-cifar100", choices[600])
    assert loaded.predict_ops(arch.ops()) == pytest.approx(y[600], abs=1e-6)
    ten_classes = Architecture("fbnet-cifar100", choices[600], {"num_classes": 10})  # the head is in the overhead
    assert loaded.predict_ops(ten_classes.ops()) == pytest.approx(y[600], abs=1e-6)
    # the additive part drives the supernet: expected latency of a one-hot choice is the prediction
    tensors = latency_tensors(space, loaded, dtype=torch.float64)
    probs = [torch.nn.functional.one_hot(torch.tensor(p.names.index(c)), len(p.names)).double()
             for p, c in zip(space.positions, choices[600])]
    assert float(expected_latency(probs, tensors, fixed_latency(space, loaded))) == pytest.approx(y[600], abs=1e-6)
    with pytest.raises(HwnasError, match="not in space"):
        data = json.loads((tmp_path / "p.json").read_text())
        data["entries"]["ir:1x1x1->1:k3:s1:e1:g1:relu"] = 1.0
        (tmp_path / "q.json").write_text(json.dumps(data))
        load_predictor(tmp_path / "q.json")


def test_recovered_pixel3_lut_reproduces_its_rows():
    source = next((p for p in SOURCES if p.exists()), None)
    if source is None:
        pytest.skip("no Pixel 3 data here (latency_data/phones/pixel3-models.csv or the shared phones CSV)")
    if source.name.endswith("-models.csv"):
        choices, y = read_whole_model_data(source)
    else:
        table = read_phone_csv(source)
        choices, y = table.choices, table.latency["pixel3_ms"]
    settings = {"robust": False, "drift_block": 0, "features": (), "alpha": 0.0}
    pred = fit_whole_model(get_space("fbnet-cifar100"), choices[:400], y[:400], {"name": "pixel3"}, settings=settings)
    err = np.abs(pred.predict_many_choices(choices) - y)
    assert err.max() < 1e-3  # the rows carry 4 decimals: exact up to their rounding


# -- issue 23 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("column, what", [
    ("../../../../tmp/x/PWNED_phone_ms", "device name '../../../../tmp/x/PWNED_phone' must be a plain name"),
    ("/tmp/x/PWNED_abs_ms", "device name '/tmp/x/PWNED_abs' must be a plain name"),
    ("_ms", "device name '' must be a plain name"),
    ("pixel2_ms", "device 'pixel2' has more than one latency column"),
])
def test_import_refuses_device_names_that_are_not_plain_or_repeat(tmp_path, capsys, monkeypatch, column, what):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "phones.csv"
    path.write_text("\n".join((HEADER + "," + column, ROW0 + ",5", ROW1 + ",6")) + "\n")
    assert main(["phones", "import", str(path), "--out", str(tmp_path / "a" / "b" / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hwnas: error: {path}, line 1") and what in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["phones.csv"]  # nothing written, inside or outside


def test_profile_refuses_a_device_name_with_a_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("../../x", "/tmp/x", "a/b"):
        assert main(["profile", "--space", "proxyless-tiny", "--device", name, "--limit", "1"]) == 2
        assert f"--device: device name {name!r} must be a plain name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cell", ["1e12", "0", "-3"])
def test_impossible_latencies_are_refused_at_import_and_at_fit(tmp_path, capsys, cell):
    path = _csv(tmp_path, ROW0, ROW1.rsplit(",", 7)[0] + f",{cell},86,91,29,17.1345,31.1756,97.4796")
    assert main(["phones", "import", str(path), "--out", str(tmp_path / "out")]) == 2
    assert f"line 3: corrupted row: 'pixel2_ms' must be a number of ms in (0, 60000], got '{cell}'" in \
        capsys.readouterr().err
    import_phone_csv(_csv(tmp_path, ROW0, ROW1), tmp_path / "out")
    models = tmp_path / "out" / "pixel2-models.csv"
    models.write_text(models.read_text().replace(",28,0,1\n", f",{cell},0,1\n"))
    assert main(["phones", "fit", str(models), "--out", str(tmp_path / "p.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"line 2: corrupted row: field 'median_ms' must be a number of ms in (0, 60000], got '{cell}'" in err
    assert not (tmp_path / "p.json").exists()


def test_an_outlier_row_is_refused_before_fitting(tmp_path, capsys):
    rows = [ROW0, ROW1] + [f"{i}," + ROW0.split(",", 2)[1] + ",30,56,100,31,17.5,30.2,111.6" for i in range(2, 12)]
    rows.append("12," + ROW0.split(",", 2)[1] + ",5000,56,100,31,17.5,30.2,111.6")  # 170x the others
    import_phone_csv(_csv(tmp_path, *rows), tmp_path / "out")
    assert main(["phones", "fit", str(tmp_path / "out" / "pixel2-models.csv"), "--out", str(tmp_path / "p.json"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "row phones.csv#12 has 5000 ms, more than 20x away from the median 30 ms of its 13 rows" in err
    assert not (tmp_path / "p.json").exists()
