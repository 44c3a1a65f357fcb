"""OpSpec list -> Keras model (NHWC) that computes what ``hwnas.builder.build_network(ops)`` computes.

Imports TensorFlow/Keras: use it only inside the conversion worker subprocess
(:mod:`hwnas.export.tflite_worker`), never in the main hwnas process.

``build_keras(ops, weights=None) -> keras.Model``

* convolutions pad explicitly (``ZeroPadding2D(k // 2)``) and then use "valid"
  padding, so stride 2 matches PyTorch exactly; BN epsilon is 1e-5;
* grouped 1x1 convs use ``Conv2D(groups=g)``; a channel shuffle follows the
  first conv of a grouped ``ir`` block (reshape, transpose, reshape);
* ``weights`` (optional) is the state dict of the PyTorch network as numpy
  arrays (e.g. ``safetensors.numpy.load_file``); conv kernels are moved from
  OIHW to HWIO, depthwise kernels to (k, k, C, 1), BN takes gamma, beta,
  running mean and variance, Dense takes the transposed weight.
"""

from __future__ import annotations

import numpy as np

from hwnas.ops import OpSpec

BN_EPS = 1e-5


def keras_module():
    import keras

    return keras


class Weights:
    """Looks up PyTorch state-dict entries by module prefix (None when building without weights)."""

    def __init__(self, state: dict | None):
        self.state = state
        self.used: set[str] = set()

    def get(self, name: str) -> np.ndarray:
        self.used.add(name)
        return np.asarray(self.state[name], dtype=np.float32)


def _conv_bn(x, c_out, kernel, stride, groups, act, depthwise, prefix, w: Weights, layers: list):
    """PyTorch conv_bn: conv (pad k // 2, no bias) + BN + activation; weights from ``prefix``.0/.1."""
    K = keras_module().layers
    if kernel > 1:
        x = K.ZeroPadding2D(kernel // 2)(x)
    if depthwise:
        conv = K.DepthwiseConv2D(kernel, strides=stride, padding="valid", use_bias=False)
    else:
        conv = K.Conv2D(c_out, kernel, strides=stride, padding="valid", groups=groups, use_bias=False)
    x = conv(x)
    bn = K.BatchNormalization(epsilon=BN_EPS)
    x = bn(x)
    if w.state is not None:
        kernel_w = w.get(f"{prefix}.0.weight")  # (O, I/g, k, k)
        if depthwise:
            layers.append((conv, [kernel_w.transpose(2, 3, 0, 1)]))  # (k, k, C, 1)
        else:
            layers.append((conv, [kernel_w.transpose(2, 3, 1, 0)]))  # (k, k, I/g, O)
        layers.append((bn, [w.get(f"{prefix}.1.{n}") for n in ("weight", "bias", "running_mean", "running_var")]))
    if act == "relu6":
        x = K.ReLU(6.0)(x)
    elif act == "relu":
        x = K.ReLU()(x)
    return x


def _shuffle(x, groups: int):
    K = keras_module().layers
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    x = K.Reshape((h, w, groups, c // groups))(x)
    x = K.Permute((1, 2, 4, 3))(x)
    return K.Reshape((h, w, c))(x)


def keras_block(x, op: OpSpec, prefix: str, w: Weights, layers: list):
    K = keras_module().layers
    if op.kind in ("mbconv", "ir"):
        inp, j = x, 0
        mid = op.mid_channels
        if op.kind == "ir" or op.expand != 1:
            x = _conv_bn(x, mid, 1, 1, op.groups, op.act, False, f"{prefix}.body.{j}", w, layers)
            j += 1
            if op.groups > 1:
                x = _shuffle(x, op.groups)
                j += 1
        x = _conv_bn(x, mid, op.kernel, op.stride, 1, op.act, True, f"{prefix}.body.{j}", w, layers)
        x = _conv_bn(x, op.c_out, 1, 1, op.groups, "none", False, f"{prefix}.body.{j + 1}", w, layers)
        return K.Add()([x, inp]) if op.has_residual else x
    if op.kind == "conv":
        return _conv_bn(x, op.c_out, op.kernel, op.stride, op.groups, op.act, False, prefix, w, layers)
    if op.is_identity:
        return x
    if op.kind == "skip":
        return _conv_bn(x, op.c_out, 1, op.stride, 1, op.act, False, prefix, w, layers)
    if op.kind == "pool":
        return K.GlobalAveragePooling2D()(x)
    if op.kind == "linear":
        dense = K.Dense(op.c_out)
        y = dense(x)
        if w.state is not None:
            layers.append((dense, [w.get(f"{prefix}.weight").T, w.get(f"{prefix}.bias")]))
        return y
    raise ValueError(f"no Keras block for kind {op.kind!r}")


def input_shape(op: OpSpec) -> tuple[int, ...]:
    """NHWC input shape (without batch) of the first operator."""
    return (op.c_in,) if op.kind == "linear" else (op.h, op.w, op.c_in)


def build_keras(ops: list[OpSpec], weights: dict | None = None):
    """The Keras model of ``ops`` (zero ops skipped), optionally with PyTorch weights copied in."""
    keras = keras_module()
    ops = [op for op in ops if op.kind != "zero"]
    if not ops:
        raise ValueError("no operators to build")
    w = Weights(weights)
    layers: list = []
    inp = keras.Input(shape=input_shape(ops[0]), batch_size=1, name="input")
    x = inp
    for i, op in enumerate(ops):
        x = keras_block(x, op, str(i), w, layers)
    model = keras.Model(inp, x)
    for layer, values in layers:
        layer.set_weights(values)
    if weights is not None:
        unused = {k for k in weights if not k.endswith("num_batches_tracked")} - w.used
        if unused:
            raise ValueError(f"state dict entries not used by the Keras model: {sorted(unused)[:5]}")
    return model
