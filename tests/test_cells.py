"""Cell space: derivation rules, shapes, costs, genotype files, search steps, train/export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.blocks import make_block
from hwnas.cells.derive import derive_darts, derive_snas, edge_entropy
from hwnas.cells.genotype import Genotype
from hwnas.cells.genotype import network_cost
from hwnas.cells.network import build_cell_network
from hwnas.cells.ops import PRIMITIVES, edge_op
from hwnas.cells.search import CellSearchConfig, Resource, search_cells
from hwnas.cells.space import CellSpace
from hwnas.cells.supernet import CellSupernet
from hwnas.costs import op_cost
from hwnas.data import load_dataset
from hwnas.errors import HwnasError

TINY = {"layers": 3, "channels": 4, "resolution": 8}
P = {name: i for i, name in enumerate(PRIMITIVES)}
EDGES = CellSpace({"nodes": 3}).edges  # (2,0) (2,1) (3,0) (3,1) (3,2) (4,0) (4,1) (4,2) (4,3)


def weights(rows: dict[tuple[int, int], dict[str, float]]) -> torch.Tensor:
    """An (edges x primitives) matrix: small uniform mass plus the given entries."""
    w = torch.full((len(EDGES), len(PRIMITIVES)), 0.01)
    for edge, entries in rows.items():
        for name, value in entries.items():
            w[EDGES.index(edge), P[name]] = value
    return w


def genotype(nodes=None, **params) -> Genotype:
    normal = nodes or [[["sep_conv_3x3", 0], ["skip", 1]], [["dil_conv_5x5", 1], ["max_pool_3x3", 2]],
                       [["avg_pool_3x3", 0], ["sep_conv_5x5", 3]], [["dil_conv_3x3", 2], ["skip", 4]]]
    reduce = [[["max_pool_3x3", 0], ["sep_conv_5x5", 1]], [["skip", 0], ["dil_conv_3x3", 2]],
              [["avg_pool_3x3", 1], ["skip", 2]], [["sep_conv_3x3", 3], ["skip", 1]]]
    return Genotype(normal, reduce, {**TINY, **params})


# -- derivation ---------------------------------------------------------------------------
def test_darts_rule_ignores_zero_and_keeps_top2_per_node():
    w = weights({
        (2, 0): {"zero": 0.9, "sep_conv_3x3": 0.05},   # zero-dominated: DARTS still keeps it, as sep_conv
        (2, 1): {"skip": 0.3},
        (3, 0): {"max_pool_3x3": 0.2}, (3, 1): {"dil_conv_3x3": 0.6}, (3, 2): {"avg_pool_3x3": 0.5},
        (4, 0): {"zero": 0.95}, (4, 1): {"sep_conv_5x5": 0.4}, (4, 2): {"skip": 0.1}, (4, 3): {"dil_conv_5x5": 0.3},
    })
    cell = derive_darts(w, EDGES)
    assert cell == [[("sep_conv_3x3", 0), ("skip", 1)],
                    [("dil_conv_3x3", 1), ("avg_pool_3x3", 2)],
                    [("sep_conv_5x5", 1), ("dil_conv_5x5", 3)]]
    assert all(len(node) == 2 for node in cell)


def test_snas_rule_drops_zero_edges_and_allows_any_in_degree():
    w = weights({
        (2, 0): {"zero": 0.9, "sep_conv_3x3": 0.05}, (2, 1): {"skip": 0.3},
        (3, 0): {"zero": 0.5}, (3, 1): {"zero": 0.6}, (3, 2): {"zero": 0.5},   # node 3: no input at all
        (4, 0): {"max_pool_3x3": 0.5}, (4, 1): {"sep_conv_5x5": 0.4}, (4, 2): {"skip": 0.7}, (4, 3): {"zero": 0.3},
    })
    cell = derive_snas(w, EDGES)
    assert cell == [[("skip", 1)], [], [("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("skip", 2)]]


def test_snas_sampled_rule_follows_one_hot_distribution():
    one_hot = torch.full((len(EDGES), len(PRIMITIVES)), -30.0)
    one_hot[:, P["dil_conv_3x3"]] = 30.0
    one_hot[0] = -30.0
    one_hot[0, P["zero"]] = 30.0
    cell = derive_snas(one_hot, EDGES, sample=True, generator=torch.Generator().manual_seed(0))
    assert cell[0] == [("dil_conv_3x3", 1)]
    assert [len(n) for n in cell] == [1, 3, 4]


def test_edge_entropy():
    h = edge_entropy(torch.stack([torch.full((8,), 1 / 8), torch.eye(8)[2]]))
    assert h[0].item() == pytest.approx(math.log(8))
    assert h[1].item() == pytest.approx(0.0, abs=1e-6)


# -- shapes and costs -------------------------------------------------------------------------
def test_reduction_cells_halve_resolution_and_double_channels():
    g = genotype(layers=6, channels=4, resolution=16)
    space = g.space
    assert space.reduction_layers == [2, 4]
    net = build_cell_network(g).eval()
    seen = []
    for cell in net.cells:
        cell.register_forward_hook(lambda m, i, o: seen.append((m.layout, tuple(o.shape))))
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    for layout, shape in seen:
        assert shape == (2, 4 * layout.channels, layout.h, layout.h)
        assert layout.reduction == (layout.index in (2, 4))
    assert [s[3] for _, s in seen] == [16, 16, 8, 8, 4, 4]
    assert [s[1] for _, s in seen] == [16, 16, 32, 32, 64, 64]


def test_supernet_and_dropped_node_shapes():
    nodes = [[["skip", 1]], [], [["sep_conv_3x3", 3], ["max_pool_3x3", 0], ["skip", 2]], [["avg_pool_3x3", 4]]]
    net = build_cell_network(genotype(nodes))
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    sup = CellSupernet(CellSpace(TINY), "darts")
    assert sup(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert len(sup.arch_parameters()) == 2 * 14 and sup.alphas(True).shape == (14, 8)


@pytest.mark.parametrize("name", PRIMITIVES[1:])
@pytest.mark.parametrize("stride", [1, 2])
def test_edge_costs_match_flop_counter_and_parameters(name, stride):
    op = edge_op(name, 6, 8, 8, stride)
    block = make_block(op).eval()
    with FlopCounterMode(display=False) as counter:
        out = block(torch.randn(1, 6, 8, 8))
    cost = op_cost(op)
    assert counter.get_total_flops() == 2 * cost.flops
    assert sum(p.numel() for p in block.parameters()) == cost.params
    assert out.shape == (1, op.c_out, op.out_h, op.out_w)


def test_network_cost_matches_flop_counter_and_parameters():
    g = genotype()
    net = build_cell_network(g).eval()
    with FlopCounterMode(display=False) as counter:
        net(torch.randn(1, 3, 8, 8))
    cost = network_cost(g)
    assert counter.get_total_flops() == 2 * cost.flops
    assert sum(p.numel() for p in net.parameters()) == cost.params
    assert cost.mac > 0


# -- genotype files --------------------------------------------------------------------------
def test_genotype_round_trip(tmp_path):
    g = genotype()
    g.meta = {"mode": "darts"}
    path = g.save(tmp_path / "g.json")
    loaded = Genotype.load(path)
    assert loaded.normal == g.normal and loaded.reduce == g.reduce and loaded.space_params == g.space_params
    assert loaded.meta == {"mode": "darts"}


@pytest.mark.parametrize("change, message", [
    (lambda d: d["normal"][1].append(["conv_7x7", 0]), "field 'normal[1][2]': unknown operation 'conv_7x7'"),
    (lambda d: d["reduce"][0].append(["zero", 1]), "field 'reduce[0][2]': unknown operation 'zero'"),
    (lambda d: d["normal"][0].__setitem__(0, ["skip", 2]), "field 'normal[0][0]': input 2 must be a node before"),
    (lambda d: d["normal"][3].__setitem__(1, ["skip", 2]), "field 'normal[3][1]': node 5 takes input 2 twice"),
    (lambda d: d["reduce"].pop(), "field 'reduce' has 3 nodes, the space has 4"),
    (lambda d: d["normal"][0].__setitem__(0, "skip"), "field 'normal[0][0]' must be [operation, input node]"),
    (lambda d: d.pop("reduce"), "missing field 'reduce'"),
    (lambda d: d["space_params"].__setitem__("channels", 5), "'channels' must be even"),
    (lambda d: d["space_params"].__setitem__("depth", 5), "unknown darts-cell field(s): depth"),
    (lambda d: d.__setitem__("space", "proxyless-tiny"), "field 'space' must be 'darts-cell'"),
])
def test_genotype_validation_names_file_and_field(tmp_path, change, message):
    data = genotype().to_dict()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HwnasError) as err:
        Genotype.load(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_genotype_bad_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"space": "darts-cell",\n "normal": [}')
    with pytest.raises(HwnasError, match="broken.json: bad JSON at line 2"):
        Genotype.load(path)


# -- search ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_splits():
    return load_dataset("digits", 8, limit_train=64, limit_val=32)


@pytest.mark.parametrize("mode, order, resource", [("darts", 1, None), ("darts", 2, None), ("snas", 1, "flops")])
def test_search_step_runs_in_each_mode(tmp_path, tiny_splits, mode, order, resource):
    torch.set_num_threads(1)
    cfg = CellSearchConfig(mode=mode, darts_order=order, space_params=TINY, epochs=1, batch_size=16, max_steps=1,
                           resource=resource, eta="aggressive", out=str(tmp_path), progress=False)
    torch.manual_seed(cfg.seed)  # the search seeds the same way: same initial alphas
    initial = CellSupernet(CellSpace(TINY), mode).alphas(False).detach()
    result = search_cells(cfg, tiny_splits)
    assert (result.supernet.alphas(False).detach() - initial).abs().max() > 1e-3  # the alphas took a step
    assert result.entropy[0]["step"] == 0 and result.entropy[-1]["step"] == 1
    assert set(result.child_acc) == {"darts", "snas"} and 0 <= result.supernet_acc <= 1
    assert Genotype.load(tmp_path / "genotype.json").meta["mode"] == mode
    for name in ("gap.json", "entropy.png", "cells.png", "alphas.json", "history.jsonl"):
        assert (tmp_path / name).exists()
    if mode != "snas":
        return
    # resuming a finished run trains nothing more and gives the same derived cells
    cfg.resume = True
    again = search_cells(cfg, tiny_splits)
    assert again.genotype.normal == result.genotype.normal and len(again.history) == 1


def test_resource_term_pushes_alphas_to_cheap_operations():
    torch.manual_seed(0)
    net = CellSupernet(CellSpace(TINY), "snas")
    res = Resource(net, CellSearchConfig(mode="snas", resource="flops", eta="moderate"))
    loss, stats = res()
    loss.backward()
    grad = net.alphas_normal[0].grad
    assert grad[P["sep_conv_5x5"]] > grad[P["sep_conv_3x3"]] > 0 > grad[P["zero"]]
    assert stats["exp_flops"] < res.maximum("flops")


def test_search_config_errors():
    with pytest.raises(HwnasError, match="darts or snas"):
        CellSearchConfig(mode="proxyless").check()
    with pytest.raises(HwnasError, match="eta preset"):
        CellSearchConfig(mode="snas", eta="extreme").check()
    with pytest.raises(HwnasError, match="needs a predictor"):
        CellSearchConfig(mode="snas", resource="latency", eta=0.1).check()


# -- train and export ------------------------------------------------------------------------
def test_standalone_network_trains_and_exports_to_onnx(tmp_path, tiny_splits):
    import onnxruntime as ort

    from hwnas.cells.deploy import export_genotype_onnx, train_genotype

    g = genotype()
    result = train_genotype(g, tiny_splits, epochs=1, max_steps=2, batch_size=16, progress=False)
    path = export_genotype_onnx(g, tmp_path / "cell.onnx", model=result.model)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = result.model.eval()(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_cli_options_map_to_cell_search_config():
    from hwnas.cli.search import cell_config_from_args as config_from_args
    from hwnas.cli import build_parser

    parse = build_parser().parse_args
    cfg = config_from_args(parse(["search", "--space", "darts-cell", "--mode", "snas", "--constraint", "aggressive",
                                  "--set", "layers=5", "--lr", "0.1", "--epochs", "3"]))
    assert (cfg.mode, cfg.resource, cfg.eta_value, cfg.lr_w, cfg.epochs) == ("snas", "flops", 0.8, 0.1, 3)
    assert cfg.space_params == {"layers": 5}
    cfg = config_from_args(parse(["search", "--space", "darts-cell", "--mode", "darts", "--darts-order", "2",
                                  "--eta-mac", "0.3"]))
    assert (cfg.darts_order, cfg.resource, cfg.eta_value) == (2, "mac", 0.3)
    with pytest.raises(HwnasError, match="--mode darts or snas"):
        config_from_args(parse(["search", "--space", "darts-cell", "--mode", "proxyless"]))


def test_latency_resource_from_a_lookup_table_covering_cell_operators(tmp_path):
    from hwnas.predictors import load_predictor
    from hwnas.predictors.lut import LookupTable

    space = CellSpace(TINY)
    entries = {op.key(): 0.001 * (i + 1) for i, op in enumerate(space.unique_ops())}
    LookupTable({"name": "fixture"}, None, "onnxruntime", "fp32", 1, entries).save(tmp_path / "lut.json")
    cfg = CellSearchConfig(mode="snas", resource="latency", eta=0.5, predictor=str(tmp_path / "lut.json"))
    net = CellSupernet(space, "snas")
    res = Resource(net, cfg, load_predictor(tmp_path / "lut.json"))
    normal, reduce, fixed = res.tables["latency"]
    edge = space.edge_op(space.layouts[0], 0, "sep_conv_3x3")  # TINY has one normal cell
    assert normal[0, P["sep_conv_3x3"]].item() == pytest.approx(entries[edge.key()])
    assert normal[0, P["zero"]] == 0 and normal[space.edges.index((3, 2)), P["skip"]] == 0
    loss, stats = res()
    loss.backward()
    assert stats["exp_latency"] > fixed > 0 and net.alphas_normal[0].grad.abs().sum() > 0
    # a table without one cell operator stops the search, naming the operator
    missing = space.edge_op(space.layouts[1], 1, "dil_conv_5x5")
    del entries[missing.key()]
    LookupTable({"name": "fixture"}, None, "onnxruntime", "fp32", 1, entries).save(tmp_path / "partial.json")
    with pytest.raises(HwnasError, match=f"does not cover cell operator {missing.key()}"):
        Resource(net, cfg, load_predictor(tmp_path / "partial.json"))


def test_a_cell_run_folder_of_an_earlier_version_is_refused_on_resume(tmp_path, tiny_splits, capsys):
    (tmp_path / "cell_checkpoint.safetensors").write_bytes(b"old")
    cfg = CellSearchConfig(space_params=TINY, epochs=1, batch_size=16, max_steps=1, out=str(tmp_path),
                           progress=False, resume=True)
    with pytest.raises(HwnasError, match=r"cell_checkpoint.safetensors: a cell search checkpoint of an earlier "
                                         r"hwnas version.*start again without --resume"):
        search_cells(cfg, tiny_splits)
    assert not (tmp_path / "checkpoint.pt").exists()
