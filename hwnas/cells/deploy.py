"""Train and export a genotype's standalone network with the shared tools.

Training uses :func:`hwnas.train.train_model` (which takes any module), export
uses :func:`hwnas.export.onnx_export.export_onnx` with the network's OpSpecs
(the stem gives the input shape). TFLite is not supported for cells: the Keras
builder (hwnas.export.keras_builder) has no cell kinds and a cell is a DAG, not
a chain of blocks.
"""

from __future__ import annotations

from pathlib import Path

from hwnas.cells.genotype import Genotype
from hwnas.cells.network import build_cell_network, network_ops


def train_genotype(genotype: Genotype, splits, **train_kwargs):
    """Train the standalone network of ``genotype`` (keyword arguments as for train_model)."""
    from hwnas.train import train_model

    return train_model(build_cell_network(genotype), splits, **train_kwargs)


def export_genotype_onnx(genotype: Genotype, path: str | Path, model=None) -> Path:
    """ONNX file of the standalone network (random weights unless ``model`` is given)."""
    from hwnas.export.onnx_export import export_onnx

    return export_onnx(network_ops(genotype), model or build_cell_network(genotype), path)
