"""Kernel-level latency prediction for models that are not from a search space (nn-Meter's method).

A model file's nodes are grouped into *kernels*, the units the runtime executes
(:mod:`hwnas.kernels.detect`, with the fusion rules measured for LiteRT/XNNPACK);
each kernel has a type (``conv``, ``dwconv``, ``add``, ...) and dimensions
(spatial size, channels, kernel, stride, groups, elements). One regressor per
type, fitted on kernels sampled over the ranges of mobile networks at 32-224 px
(:mod:`hwnas.kernels.sample`) and timed alone (:mod:`hwnas.kernels.profile`),
prices them (:mod:`hwnas.kernels.predictor`). The TensorFlow side that builds
the sampled kernels as Keras models is :mod:`hwnas.export.keras_kernels`, run
only inside the conversion worker process. ONNX Runtime has its own detection
(:mod:`hwnas.kernels.onnx_detect`: its fusion rules and NCHWc layout changes),
one-kernel models built with ``onnx.helper`` (:mod:`hwnas.kernels.onnx_kernels`),
profiling (:mod:`hwnas.kernels.onnx_profile`) and calibration
(:mod:`hwnas.kernels.onnx_calibrate`); the regressors are shared.
"""
