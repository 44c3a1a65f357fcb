"""Cell network plan -> Keras model (NHWC) that computes what ``hwnas.cells.network.build_cell_network`` computes.

Imports TensorFlow/Keras: use it only inside the conversion worker subprocess
(:mod:`hwnas.export.tflite_worker`), never in the main hwnas process.

``build_keras_cells(plan, weights=None) -> keras.Model``; ``plan`` is
:func:`hwnas.cells.network.cell_plan` (plain JSON), ``weights`` the PyTorch
state dict as numpy arrays. The stem, pooling and classifier come from
:mod:`hwnas.export.keras_builder`; the cell operators follow PyTorch exactly:

* convs pad explicitly and then run "valid"; a dilated depthwise conv with
  stride 2 (which Keras cannot do) runs at stride 1 and is subsampled ``[::2, ::2]``;
* 3x3 max / average pooling (padding 1, padding not counted) is TF "same"
  pooling at stride 1, which equals PyTorch's there, subsampled for stride 2;
* the factorized reduce's second conv reads ``x[:, 1:, 1:]``;
* a node without inputs is zeros; the cell output concatenates the nodes.
"""

from __future__ import annotations

from hwnas.export.keras_builder import BN_EPS, Weights, keras_block, keras_module
from hwnas.ops import OpSpec

DILATION = 2  # hwnas.blocks.DILATION


def _subsample(x, stride: int):
    return x[:, ::stride, ::stride, :] if stride > 1 else x


class _Builder:
    """Creates Keras layers and records the PyTorch weights to copy into them."""

    def __init__(self, weights: dict | None):
        self.K = keras_module().layers
        self.w = Weights(weights)
        self.layers: list = []

    def conv(self, x, name: str, c_out: int, kernel: int = 1, stride: int = 1, dilation: int = 1,
             depthwise: bool = False):
        """PyTorch Conv2d (no bias, padding dilation * (k - 1) // 2) named ``name``."""
        pad = dilation * (kernel - 1) // 2
        if pad:
            x = self.K.ZeroPadding2D(pad)(x)
        step = 1 if dilation > 1 else stride
        if depthwise:
            layer = self.K.DepthwiseConv2D(kernel, strides=step, dilation_rate=dilation, padding="valid",
                                           use_bias=False)
        else:
            layer = self.K.Conv2D(c_out, kernel, strides=step, dilation_rate=dilation, padding="valid",
                                  use_bias=False)
        y = layer(x)
        if self.w.state is not None:
            kernel_w = self.w.get(f"{name}.weight")  # (O, I, k, k); depthwise (C, 1, k, k)
            self.layers.append((layer, [kernel_w.transpose(2, 3, 0, 1) if depthwise else
                                        kernel_w.transpose(2, 3, 1, 0)]))
        return _subsample(y, stride) if step != stride else y

    def bn(self, x, name: str):
        layer = self.K.BatchNormalization(epsilon=BN_EPS)
        y = layer(x)
        if self.w.state is not None:
            self.layers.append((layer, [self.w.get(f"{name}.{n}") for n in
                                        ("weight", "bias", "running_mean", "running_var")]))
        return y

    def act(self, x, op: OpSpec):
        return self.K.ReLU()(x) if op.act == "relu" else x

    def sep_stack(self, x, p: str, first: int, op: OpSpec, c_out: int, stride: int, dilation: int):
        """ReLU, depthwise, pointwise, BN: modules ``first`` .. ``first + 3`` of a Sequential."""
        x = self.act(x, op)
        x = self.conv(x, f"{p}.{first + 1}", op.c_in, op.kernel, stride, dilation, depthwise=True)
        x = self.conv(x, f"{p}.{first + 2}", c_out)
        return self.bn(x, f"{p}.{first + 3}")

    def op(self, x, op: OpSpec, p: str):
        """One cell operator (hwnas.cells.ops.make_edge) with weights under prefix ``p``."""
        K, s = self.K, op.stride
        if op.is_identity:
            return x
        if op.kind == "rcb":
            return self.bn(self.conv(self.act(x, op), f"{p}.1", op.c_out, op.kernel, s), f"{p}.2")
        if op.kind == "sep_conv":
            x = self.sep_stack(x, p, 0, op, op.c_in, s, 1)
            return self.sep_stack(x, p, 4, op, op.c_out, 1, 1)
        if op.kind == "dil_conv":
            return self.sep_stack(x, p, 0, op, op.c_out, s, DILATION)
        if op.kind == "max_pool":
            return _subsample(K.MaxPooling2D(op.kernel, strides=1, padding="same")(x), s)
        if op.kind == "avg_pool":
            return _subsample(K.AveragePooling2D(op.kernel, strides=1, padding="same")(x), s)
        if op.kind == "fact_reduce":
            x = self.act(x, op)
            a = self.conv(x, f"{p}.conv1", op.c_out // 2, 1, 2)
            b = self.conv(K.Cropping2D(((1, 0), (1, 0)))(x), f"{p}.conv2", op.c_out // 2, 1, 2)
            return self.bn(K.Concatenate(axis=-1)([a, b]), f"{p}.bn")
        raise ValueError(f"no Keras cell operator for kind {op.kind!r}")

    def cell(self, s0, s1, cell: dict):
        states = [self.op(s0, OpSpec.from_dict(cell["pre0"]), cell["pre0_prefix"]),
                  self.op(s1, OpSpec.from_dict(cell["pre1"]), cell["pre1_prefix"])]
        for edges in cell["nodes"]:
            outs = [self.op(states[e["input"]], OpSpec.from_dict(e["op"]), e["prefix"]) for e in edges]
            if not outs:  # every incoming edge dropped: zeros of the node's shape
                stride = states[1].shape[1] // cell["h"]
                outs = [keras_module().ops.zeros_like(_subsample(states[1], stride))]
            states.append(outs[0] if len(outs) == 1 else self.K.Add()(outs))
        return self.K.Concatenate(axis=-1)(states[2:])


def build_keras_cells(plan: dict, weights: dict | None = None):
    """The Keras model of a cell network plan, optionally with PyTorch weights copied in."""
    keras = keras_module()
    b = _Builder(weights)
    stem = OpSpec.from_dict(plan["stem"])
    inp = keras.Input(shape=(stem.h, stem.w, stem.c_in), batch_size=1, name="input")
    s0 = s1 = keras_block(inp, stem, "stem", b.w, b.layers)
    for cell in plan["cells"]:
        s0, s1 = s1, b.cell(s0, s1, cell)
    x = keras_block(s1, OpSpec.from_dict(plan["pool"]), "pool", b.w, b.layers)
    x = keras_block(x, OpSpec.from_dict(plan["linear"]), "classifier", b.w, b.layers)
    model = keras.Model(inp, x)
    for layer, values in b.layers:
        layer.set_weights(values)
    if weights is not None:
        unused = {k for k in weights if not k.endswith("num_batches_tracked")} - b.w.used
        if unused:
            raise ValueError(f"state dict entries not used by the Keras model: {sorted(unused)[:5]}")
    return model
