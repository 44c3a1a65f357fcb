"""Cell genotypes through ``hwnas train`` and ``hwnas export``: fp32 TFLite and ONNX parity.

int8 conversion of cells uses the worker's int8 code for chains (tested in test_export_model).
"""

from __future__ import annotations

import json

import torch

from hwnas.cells.genotype import Genotype
from hwnas.cells.network import build_cell_network
from hwnas.cli import main
from hwnas.weights import load_weights, save_weights

# Every edge operation at stride 1 (normal cell) and stride 2 (edges from nodes 0/1 of a
# reduction cell), a node without inputs (4) in both cells, and nodes with 0 to 5 inputs.
NORMAL = [[["sep_conv_3x3", 0], ["sep_conv_5x5", 1]],
          [["dil_conv_3x3", 0], ["dil_conv_5x5", 1], ["max_pool_3x3", 2]],
          [],
          [["avg_pool_3x3", 0], ["skip", 1], ["skip", 4], ["sep_conv_3x3", 3]],
          [["max_pool_3x3", 1], ["avg_pool_3x3", 5]]]
REDUCE = [[["sep_conv_3x3", 0], ["skip", 1]],
          [["dil_conv_3x3", 0], ["dil_conv_5x5", 1], ["sep_conv_5x5", 2]],
          [],
          [["max_pool_3x3", 0], ["avg_pool_3x3", 1], ["skip", 2], ["dil_conv_3x3", 3], ["avg_pool_3x3", 4]],
          [["sep_conv_5x5", 0], ["max_pool_3x3", 1], ["dil_conv_5x5", 5], ["sep_conv_3x3", 4]]]


def randomized(state: dict, seed: int) -> dict:
    """Random BN statistics and affine parameters, so that BN folding and order matter."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name, value in state.items():
        if name.endswith("running_mean") or name.endswith(".bias") and value.ndim == 1:
            out[name] = torch.rand(value.shape, generator=gen) * 0.6 - 0.3
        elif name.endswith("running_var") or name.endswith(".weight") and value.ndim == 1:
            out[name] = torch.rand(value.shape, generator=gen) * 1.5 + 0.5
    return out


def test_cli_trains_and_exports_every_edge_op_with_parity(tmp_path, capsys):
    """``hwnas train`` then ``hwnas export`` of a genotype; the trained weights get random BN
    parameters and statistics before the export, so the fp32 parity check is meaningful."""
    g = Genotype(NORMAL, REDUCE, {"layers": 3, "channels": 4, "resolution": 8, "nodes": 5})
    g.save(tmp_path / "g.json")
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "g.json"), "--epochs", "1", "--max-steps", "2", "--batch-size", "16",
                 "--limit-train", "64", "--limit-val", "32", "--out", str(out)]) == 0
    assert Genotype.load(out / "genotype.json").normal == g.normal
    net = build_cell_network(g)
    load_weights(net, out / "weights.safetensors")
    save_weights(randomized(net.state_dict(), seed=1), tmp_path / "w.safetensors")
    assert main(["export", str(tmp_path / "g.json"), "--weights", str(tmp_path / "w.safetensors"),
                 "--quant", "fp32", "--check-images", "16", "--calib-images", "4", "--no-measure"]) == 0
    export = json.loads((tmp_path / "export" / "export.json").read_text())
    assert [f["format"] for f in export["files"]] == ["onnx", "tflite"]
    assert all(f["max_abs_diff"] < 1e-5 for f in export["files"]), export["files"]
    assert export["arch"]["normal"][2] == []  # the genotype, zero node included
    assert "tflite fp32" in capsys.readouterr().out


def test_cli_names_a_bad_genotype_file(tmp_path, capsys):
    data = Genotype(NORMAL[:4], REDUCE[:4], {"layers": 3, "channels": 4, "resolution": 8}).to_dict()
    data["normal"][0][0] = ["conv_7x7", 0]
    (tmp_path / "g.json").write_text(json.dumps(data))
    assert main(["train", str(tmp_path / "g.json"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "g.json" in err and "normal[0][0]" in err and "Traceback" not in err
    assert main(["export", str(tmp_path / "g.json"), "--weights", str(tmp_path / "w.safetensors")]) == 2
    assert "conv_7x7" in capsys.readouterr().err
