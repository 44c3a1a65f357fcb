"""Keras models of single kernels and of Keras applications (TensorFlow side: imported by the conversion worker only).

``build_kernel(spec)`` builds a model whose one computing layer is the kernel a
spec names (see :mod:`hwnas.kernels.sample` for the spec fields); activations
that are kernels of their own (relu, hard-swish, ...) read the model input
directly so that the converter cannot fuse them into anything.
``build_app(spec)`` builds a ``keras.applications`` network with random weights
(``{"app": "MobileNetV2", "size": 96, "alpha": 0.5, "classes": 1000}``).
"""

from __future__ import annotations

APPS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetB1",
        "ResNet50", "DenseNet121", "NASNetMobile")


def _act(name: str):
    import keras

    return {"none": None, "relu": "relu", "relu6": keras.activations.relu6}[name]


def build_kernel(spec: dict):
    import keras
    from keras import layers

    t, h = spec["type"], spec.get("h", 1)
    c = spec.get("c", spec.get("cin", 1))
    x = keras.Input((h, h, c), batch_size=1)
    inputs = [x]
    if t in ("conv", "dwconv"):
        y = x
        if spec.get("pad"):  # explicit padding then a valid convolution, as Keras applications do at stride 2
            y = layers.ZeroPadding2D(spec["pad"])(y)
        padding = spec.get("padding", "valid" if spec.get("pad") else "same")
        # a dilation detected in a network (hwnas.kernels.detect), never sampled; Keras cannot combine it with a
        # stride, and XNNPACK's time does not follow it (measured 0.95-1.00x), so a strided one is built undilated
        d = spec.get("dilation", 1) if spec["s"] == 1 else 1
        if t == "conv":
            y = layers.Conv2D(spec["cout"], spec["k"], spec["s"], padding=padding, groups=spec.get("groups", 1),
                              dilation_rate=d, activation=_act(spec.get("act", "none")))(y)
        else:
            y = layers.DepthwiseConv2D(spec["k"], spec["s"], padding=padding, dilation_rate=d,
                                       activation=_act(spec.get("act", "none")))(y)
    elif t == "fc":
        x = keras.Input((spec["cin"],), batch_size=1)
        inputs = [x]
        y = layers.Dense(spec["cout"], activation=_act(spec.get("act", "none")))(x)
    elif t in ("maxpool", "avgpool"):
        pool = layers.MaxPooling2D if t == "maxpool" else layers.AveragePooling2D
        y = pool(spec["k"], spec["s"], padding=spec.get("padding", "same"))(x)
    elif t == "mean":
        y = layers.GlobalAveragePooling2D(keepdims=spec.get("keepdims", True))(x)
    elif t in ("add", "mul"):
        other = keras.Input((1, 1, c) if spec.get("broadcast") else (h, h, c), batch_size=1)
        inputs = [x, other]
        y = layers.Add()([x, other]) if t == "add" else layers.Multiply()([x, other])
    elif t in ("relu", "relu6", "hardswish", "sigmoid", "swish"):
        fn = {"relu": keras.activations.relu, "relu6": keras.activations.relu6, "hardswish":
              keras.activations.hard_swish, "sigmoid": keras.activations.sigmoid, "swish": keras.activations.silu}[t]
        y = layers.Activation(fn)(x)
    elif t == "concat":
        others = [keras.Input((h, h, c), batch_size=1) for _ in range(spec.get("n", 2) - 1)]
        inputs = [x] + others
        y = layers.Concatenate()(inputs)
    elif t == "pad":
        y = layers.ZeroPadding2D(spec.get("p", 1))(x)
    elif t == "resize":
        y = layers.UpSampling2D(spec.get("scale", 2), interpolation=spec.get("mode", "nearest"))(x)
    elif t == "reshape":
        y = layers.Flatten()(x)
    elif t == "dynreshape":
        x = keras.Input((c,))
        inputs = [x]
        y = layers.Reshape((1, 1, c))(x)
    elif t == "empty":
        y = layers.Reshape((h, h, c))(x)
    elif t == "softmax":
        x = keras.Input((spec["n"],), batch_size=1)
        inputs = [x]
        y = layers.Softmax()(x)
    else:
        raise ValueError(f"unknown kernel type {t!r}")
    return keras.Model(inputs, y)


def build_chain(spec: dict):
    """A sequence of convolutions (``{"h", "cin", "layers": [{"type": "conv"|"dwconv", "cout", "k", "s"}]}``):
    a synthetic network for calibration, with as many weights as real ones."""
    import keras
    from keras import layers

    x = keras.Input((spec["h"], spec["h"], spec["cin"]), batch_size=1)
    y = x
    for layer in spec["layers"]:
        if layer["type"] == "dwconv":
            y = layers.DepthwiseConv2D(layer["k"], layer["s"], padding="same", activation="relu")(y)
        else:
            y = layers.Conv2D(layer["cout"], layer["k"], layer["s"], padding="same", activation="relu")(y)
    return keras.Model(x, y)


def build_app(spec: dict):
    import keras

    name = spec["app"]
    if name not in APPS:
        raise ValueError(f"unknown application {name!r}; expected one of {', '.join(APPS)}")
    size = int(spec["size"])
    kwargs = {"weights": None, "input_shape": (size, size, 3), "classes": int(spec.get("classes", 1000))}
    if "alpha" in spec:
        kwargs["alpha"] = float(spec["alpha"])
    if name.startswith("MobileNetV3"):
        kwargs["include_preprocessing"] = False
        if spec.get("minimalistic"):
            kwargs["minimalistic"] = True
    return getattr(keras.applications, name)(**kwargs)
