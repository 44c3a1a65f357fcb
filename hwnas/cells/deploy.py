"""Train and export a genotype's standalone network with the shared tools.

Training uses :func:`hwnas.train.train_model` (which takes any module); export
uses :func:`hwnas.export.onnx_export.export_onnx` with the network's OpSpecs
(the stem gives the input shape) and :func:`hwnas.export.tflite.export_tflite`
with the genotype itself: the conversion worker builds a Keras model of the cell
DAG (:mod:`hwnas.export.keras_cells`) and copies the PyTorch weights in. The
whole checked export (ONNX, TFLite fp32 / dynamic / int8, parity, timing) is
``hwnas export GENOTYPE.json --weights W`` (:func:`hwnas.export.trained.export_trained`),
training ``hwnas train GENOTYPE.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwnas.cells.genotype import Genotype, network_ops
from hwnas.cells.network import build_cell_network


def train_genotype(genotype: Genotype, splits, **train_kwargs):
    """Train the standalone network of ``genotype`` (keyword arguments as for train_model)."""
    from hwnas.train import train_model

    return train_model(build_cell_network(genotype), splits, **train_kwargs)


def export_genotype_onnx(genotype: Genotype, path: str | Path, model=None) -> Path:
    """ONNX file of the standalone network (random weights unless ``model`` is given)."""
    from hwnas.export.onnx_export import export_onnx

    return export_onnx(network_ops(genotype), model or build_cell_network(genotype), path)


def export_genotype_tflite(genotype: Genotype, path: str | Path, model=None, quant: str = "fp32",
                           representative: np.ndarray | None = None) -> Path:
    """TFLite file of the standalone network (random weights unless ``model`` is given);
    ``representative``: NCHW calibration images for int8."""
    from hwnas.export.tflite import export_tflite

    model = model or build_cell_network(genotype)
    return export_tflite(genotype, model.state_dict(), path, quant=quant, representative=representative)
