"""Export of operators and networks to ONNX and TFLite, and parity checks.

Entry points (see each module's docstring for details)::

    export_onnx(ops, model, path) -> Path                           # hwnas.export.onnx_export
    export_tflite(ops_or_genotype, state_dict_or_None, path, quant="fp32",
                  representative=None, int8_io=False) -> Path       # hwnas.export.tflite (subprocess)
    TFLiteConverter()                                               # batch conversion, one TF import
    parity(ops, model, onnx_path=None, tflite_path=None, x=None) -> {"onnxruntime": diff, "tflite": diff}

TensorFlow is only imported by ``hwnas.export.tflite_worker``,
``hwnas.export.keras_builder`` and ``hwnas.export.keras_cells`` (cell networks),
which run in the conversion subprocess.
"""

from hwnas.export.onnx_export import export_onnx
from hwnas.export.parity import parity
from hwnas.export.tflite import TFLiteConverter, export_tflite

__all__ = ["export_onnx", "export_tflite", "parity", "TFLiteConverter"]
